"""An embedding model whose hidden dim was permuted keeps one run-time permutation (the output gather): the
served model applies it outside model.pt, times it, and reports the time in triton_icd_permutation_time_seconds.
Uses a tiny random-weight BERT (bert_config shapes) to stay fast; outputs are compared, not judged."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from icd.export.options import ExportOptions
from icd.export.repository import export_model
from tests.serve.helpers import icd_log_records, metric

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 1000, "max_position_embeddings": 64}


def _tiny_embedding_run(run_dir: Path) -> tuple[Path, torch.nn.Module]:
    from icd.config.schema import IcdConfig
    from icd.io.atomic import write_json_atomic
    from icd.io.permutation_file import write_permutation_file
    from icd.model.layout import permutable_dims
    from icd.model.loader import load_encoder, load_tokenizer
    from icd.pipeline.model_store import save_run_encoder

    config = IcdConfig.model_validate({"model": {"source": "bert_config", "task": "embedding", "bert_config": TINY}})
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "config.lock.json", config.model_dump(mode="json"))
    encoder = load_encoder(config.model)
    perm = np.random.default_rng(0).permutation(32)
    encoder.set_output_index(torch.as_tensor(perm))
    save_run_encoder(run_dir, encoder, load_tokenizer(config.model), config.model, runtime_transforms=[])
    dims = permutable_dims(encoder, ("hidden",))
    write_permutation_file(run_dir / "permutation.json", dims, {"hidden": perm}, model={"tiny": True})
    np.savez(run_dir / "correlation_matrix.npz", hidden=np.eye(32, dtype=np.float32))
    return run_dir, encoder


@pytest.mark.e2e
@pytest.mark.slow
def test_output_gather_is_applied_timed_and_reported(tmp_path, triton_server):
    run_dir, encoder = _tiny_embedding_run(tmp_path / "run")
    result = export_model(run_dir, tmp_path / "models", ExportOptions(model_name="tiny_icd"))
    layout = json.loads((result.version_dir / "icd_layout.json").read_text())
    assert layout["runtime_permutations"]["output"] == encoder.output_index.tolist()
    assert result.output_name == "embedding" and result.output_width == 32

    ids = torch.randint(1, 1000, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = encoder(ids, mask).numpy()
        raw = torch.jit.load(str(result.version_dir / "model.pt"))(ids, mask).numpy()
    assert not np.allclose(raw, expected), "the gather is not inside model.pt for the python backend"

    server = triton_server(tmp_path / "models", timeout_s=300,
                           env={"TRITON_ICD_CACHE_DIR": str(tmp_path / "cache")})
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = [grpcclient.InferInput("input_ids", [3, 12], "INT64"),
                  grpcclient.InferInput("attention_mask", [3, 12], "INT64")]
        inputs[0].set_data_from_numpy(ids.numpy())
        inputs[1].set_data_from_numpy(mask.numpy())
        served = client.infer("tiny_icd", inputs).as_numpy("embedding")
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    text = httpx.get(server.metrics_url, trust_env=False).text
    seconds = metric(text, "triton_icd_permutation_time_seconds", model="tiny_icd", version="1")
    records = icd_log_records(server.log_text())
    assert seconds is not None and seconds > 0.0
    assert seconds == pytest.approx(sum(r["permutation_time_s"] for r in records), rel=1e-6, abs=1e-9)
