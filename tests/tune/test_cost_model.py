from __future__ import annotations

import pytest

from icd.errors import ConfigError
from icd.tune.cost_model import COST_MODEL_DIR, load_cost_model


@pytest.mark.parametrize("name", ["aws-p4d", "aws-g5", "gcp-a2", "cpu"])
def test_shipped_cost_models_carry_their_source(name):
    model, path = load_cost_model(name)
    assert path.parent == COST_MODEL_DIR and model.note == "list price as published"
    for entry in model.instances:
        assert entry.source.startswith("https://") and "list price as published" in entry.as_of
        assert entry.accelerators > 0 or entry.vcpus  # CPU-only entries say how many vCPUs the price buys


def test_unknown_cost_model_lists_shipped():
    with pytest.raises(ConfigError, match="aws-p4d"):
        load_cost_model("azure-nd")


def test_cost_model_of_the_wrong_type_names_the_field(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nprovider: p\ncurrency: USD\ninstances:\n  - {type: x, price_per_hour: cheap, "
                    "accelerators: 0, region: r, source: s, as_of: d}\n")
    with pytest.raises(ConfigError, match=r"instances.0.price_per_hour"):
        load_cost_model(str(path))
    model, _ = load_cost_model("cpu")
    with pytest.raises(ConfigError, match="--instance-type 'p5'"):
        model.instance("p5")
