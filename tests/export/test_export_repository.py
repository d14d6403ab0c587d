"""Export of the real MiniLM classifier run to a Triton model repository (no server)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from icd.export.config_pbtxt import read_config
from icd.export.repository import verify_model_dir
from icd.serve.backend.icd_runtime import MANIFEST_NAME

pytestmark = pytest.mark.slow  # builds the session run dir + two exports of the real model (~40 s on 2 cores)


def test_layout_matches_the_guide(triton_repo_bert):
    icd_files = {p.name for p in (triton_repo_bert / "bert_icd" / "1").iterdir()}
    assert {"model.pt", "permutation.json", "correlation_matrix.npz", "model.py", MANIFEST_NAME,
            "provenance.json"} <= icd_files
    base_files = {p.name for p in (triton_repo_bert / "bert_baseline" / "1").iterdir()}
    assert "model.pt" in base_files and "permutation.json" not in base_files
    for name in ("bert_icd", "bert_baseline"):
        config = read_config(triton_repo_bert / name / "config.pbtxt")
        assert config.name == name and config.backend == "python" and config.max_batch_size == 32
        assert [o.name for o in config.output] == ["logits"] and list(config.output[0].dims) == [2]
        verify_model_dir(triton_repo_bert / name)


def test_manifest_passes_sha256sum_c(triton_repo_bert):
    for name in ("bert_icd", "bert_baseline"):
        done = subprocess.run(["sha256sum", "-c", MANIFEST_NAME], cwd=triton_repo_bert / name / "1",
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "model.pt: OK" in done.stdout


def test_artefacts_are_copied_and_provenance_says_how_it_was_made(triton_repo_bert, identity_run_dir):
    version = triton_repo_bert / "bert_icd" / "1"
    assert (version / "permutation.json").read_bytes() == (identity_run_dir / "permutation.json").read_bytes()
    provenance = json.loads((version / "provenance.json").read_text())
    assert provenance["kind"] == "icd" and provenance["config"]["model"]["task"] == "sequence_classification"
    assert all({"type", "version", "data", "source"} <= set(record) for record in provenance["applied"])
    # The identity sample applies nothing: int8 is only configured, every permutation is the identity.
    assert [record["type"] for record in provenance["applied"]] == ["runtime_export"]
    assert provenance["applied"][0]["data"]["runtime"] == "torchscript"
    assert [t["type"] for t in provenance["configured_transforms"]] == ["int8"]
    assert provenance["export_options"]["data"]["model_name"] == "bert_icd"
    baseline = json.loads((triton_repo_bert / "bert_baseline" / "1" / "provenance.json").read_text())
    assert baseline["kind"] == "baseline" and [r["type"] for r in baseline["applied"]] == ["runtime_export"]
    layout = json.loads((version / "icd_layout.json").read_text())
    assert 0.0 <= layout["layout_efficiency"] <= 1.0 and "hidden" in layout["dims"]
    assert layout["runtime_permutations"] == {}


def test_torchscript_reproduces_the_in_process_models(triton_repo_bert, identity_run_dir, minilm_tokenizer):
    from icd.config.schema import IcdConfig
    from icd.model.loader import load_encoder
    from icd.pipeline.model_store import load_run_encoder

    batch = minilm_tokenizer(["Return the absolute value of the argument.", "Open a file."], padding=True,
                             return_tensors="pt")
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    lock = json.loads((identity_run_dir / "config.lock.json").read_text())
    refs = {"bert_icd": load_run_encoder(identity_run_dir / "model"),
            "bert_baseline": load_encoder(IcdConfig.model_validate(lock).model)}
    for name, encoder in refs.items():
        traced = torch.jit.load(str(triton_repo_bert / name / "1" / "model.pt"))
        with torch.no_grad():
            np.testing.assert_allclose(traced(ids, mask).numpy(), encoder(ids, mask).numpy(), atol=1e-5, rtol=0)
