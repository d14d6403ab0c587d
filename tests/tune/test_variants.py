"""Runtime / precision variants: version folders of one model, read from their provenance.json."""

from __future__ import annotations

import json

import pytest

from icd.errors import ConfigError
from icd.export.config_pbtxt import parse_config
from icd.serve.synthetic_model import EchoDelaySpec, echo_delay_config
from icd.tune import model_config
from icd.tune.space import Candidate, SearchSpace
from icd.tune.strategy import hill_climb
from icd.tune.objective import Objective, ObjectiveKind
from icd.tune.measurement import Slo
from icd.tune.variants import Variant, read_variant, read_variants


def write_provenance(version_dir, runtime: str, precision: str) -> None:
    """A provenance.json as icd export-triton writes it (only the runtime_export record matters here)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "provenance.json").write_text(json.dumps({"applied": [
        {"type": "runtime_export", "version": 1, "source": "icd export-triton",
         "data": {"runtime": runtime, "precision": precision, "recipe": {}}}]}))


def test_read_variants_and_their_errors(tmp_path):
    write_provenance(tmp_path / "m" / "1", "torchscript", "fp32")
    write_provenance(tmp_path / "m" / "2", "openvino", "int8")
    assert read_variants(tmp_path, "m", [1, 2], "python") == {1: Variant(1, "torchscript", "fp32"),
                                                              2: Variant(2, "openvino", "int8")}
    assert read_variants(tmp_path, "m", [], "python") == {}
    with pytest.raises(ConfigError, match="version 3: no folder"):
        read_variant(tmp_path / "m", 3)
    (tmp_path / "m" / "4").mkdir()
    (tmp_path / "m" / "4" / "provenance.json").write_text('{"applied": []}')
    with pytest.raises(ConfigError, match="no runtime_export record"):
        read_variant(tmp_path / "m", 4)
    with pytest.raises(ConfigError, match="served by onnxruntime_onnx"):
        read_variants(tmp_path, "m", [1], "onnxruntime_onnx")
    with pytest.raises(ConfigError, match="--model-repository .* has no other/"):
        read_variants(tmp_path, "other", [1], "python")


def test_a_variant_carries_the_fidelity_its_export_verified(tmp_path):
    write_provenance(tmp_path / "m" / "2", "openvino", "bf16")
    path = tmp_path / "m" / "2" / "provenance.json"
    doc = json.loads(path.read_text())
    doc["verification"] = {"variant": "openvino:bf16", "cos_mean_fp32": 0.99987458, "nn_agreement_fp32": 0.9375}
    path.write_text(json.dumps(doc))
    variant = read_variant(tmp_path / "m", 2)
    assert (variant.cos_mean_fp32, variant.nn_agreement_fp32) == (0.999875, 0.9375)
    doc["verification"] = {"cos_mean_fp32": "n/a", "nn_agreement_fp32": True}
    path.write_text(json.dumps(doc))
    assert read_variant(tmp_path / "m", 2) == Variant(2, "openvino", "bf16")


def test_a_version_candidate_serves_that_version_on_its_runtime():
    base = parse_config(echo_delay_config(EchoDelaySpec()))
    variants = {2: Variant(2, "openvino", "int8")}
    config = model_config.apply_candidate(base, Candidate(2, 1, 8, version=2), model_config.KIND_CPU, variants)
    again = parse_config(model_config.to_pbtxt(config))
    assert list(again.version_policy.specific.versions) == [2]
    assert again.parameters["icd_runtime"].string_value == "openvino"
    assert again.parameters["icd_precision"].string_value == "int8"
    assert Candidate(2, 1, 8, version=2).config_id == "v2_i2_t1_b8_d0"
    assert Candidate.from_dict(Candidate(2, 1, 8, version=2).to_dict()).version == 2


def test_versions_are_a_categorical_dimension():
    space = SearchSpace(instance_counts=[1], threads=[1], max_batch_sizes=[8], queue_delays_us=[0], versions=[3, 1, 2])
    assert [c.config_id for c in space.enumerate().candidates] == ["v1_i1_t1_b8_d0", "v2_i1_t1_b8_d0", "v3_i1_t1_b8_d0"]
    climb = hill_climb(space, Objective(ObjectiveKind.THROUGHPUT, Slo(100.0)), Candidate(1, 1, 8, version=1))
    assert next(climb).candidate.version == 1
    from icd.tune.measurement import ConfigResult

    neighbours = [climb.send(ConfigResult(Candidate(1, 1, 8, version=1))).candidate.version]
    neighbours.append(climb.send(ConfigResult(Candidate(1, 1, 8, version=neighbours[0]))).candidate.version)
    assert sorted(neighbours) == [2, 3]  # every other version is one step away
