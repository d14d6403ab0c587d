"""Every CPU config variant the exporter renders is accepted by the real Triton (the model behind it is the
synthetic echo model, so only the configuration is under test)."""

from __future__ import annotations

import pytest

from icd.export.config_pbtxt import render_config
from icd.export.options import ExportOptions
from icd.serve.synthetic_model import _MODEL_PY

VARIANTS = {
    "defaults": {},
    "priorities": {"priority_levels": 3, "preferred_batch_sizes": (2, 4, 16), "max_queue_delay_us": 100},
    "ordered": {"preserve_ordering": True, "instance_count": 2},
    "no_batching": {"max_batch_size": 0, "preferred_batch_sizes": ()},
    "batching_off": {"dynamic_batching": False},
}


@pytest.mark.e2e
def test_rendered_configs_load_on_triton(tmp_path, triton_server):
    for name, overrides in VARIANTS.items():
        options = ExportOptions(model_name=f"cfg_{name}", **overrides)
        folder = tmp_path / options.model_name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.py").write_text(_MODEL_PY)
        (folder / "config.pbtxt").write_text(render_config(options, "logits", 2, {"icd_kind": "icd"}))
    server = triton_server(tmp_path, timeout_s=180)
    states = {row["name"]: (row.get("state"), row.get("reason", "")) for row in server.repository_index()}
    assert states == {f"cfg_{name}": ("READY", "") for name in VARIANTS}
