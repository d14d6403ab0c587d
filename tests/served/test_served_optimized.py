"""The optimizer's output, served: ``icd run`` → ``icd export-triton`` → embedded Triton (real MiniLM weights).

* served outputs equal the in-process optimized model (``load_run_encoder``) on the run's own held-out texts,
  batched as the run's measure stage batched them — the run's int8 model and its 2:4 fp32 weights (TorchScript);
* fidelity of the served optimized model against the served baseline equals what the run wrote to metrics.json;
* an A/B through the real nginx router of the optimized model against the baseline measures the same agreement
  as the two models in process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icd.config.schema import IcdConfig
from icd.data.corpus import load_split
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.model.loader import load_encoder, load_tokenizer
from icd.pipeline.model_store import load_run_encoder
from icd.transforms.nm_sparsity import is_nm
from tests.served.conftest import BASELINE, EXPORTS, TIMEOUT_S

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S)]
ATOL = {"int8": 1e-4, "fp32": 1e-3}  # times the output scale: what `icd export-triton` verifies at export
FINAL = next(e for e in EXPORTS if e.final)


class ServedModel:
    """Calls a model on Triton over HTTP like an ``Encoder``: ``(input_ids, attention_mask) -> output``."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url.removeprefix("http://"), model

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import tritonclient.http as httpclient

        inputs = [httpclient.InferInput("input_ids", list(ids.shape), "INT64"),
                  httpclient.InferInput("attention_mask", list(mask.shape), "INT64")]
        inputs[0].set_data_from_numpy(ids.numpy().astype(np.int64))
        inputs[1].set_data_from_numpy(mask.numpy().astype(np.int64))
        with httpclient.InferenceServerClient(self.url, network_timeout=300.0) as client:
            result = client.infer(self.model, inputs)
            name = result.get_response()["outputs"][0]["name"]
            return torch.from_numpy(result.as_numpy(name).copy())


def _config(run: Path) -> IcdConfig:
    return IcdConfig.model_validate(json.loads((run / "config.lock.json").read_text()))


def _heldout_outputs(model, run: Path) -> torch.Tensor:
    """Outputs for the run's held-out texts, one request per batch of the measure stage, in text order."""
    cfg = _config(run)
    texts = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed).heldout
    return encode(model, load_tokenizer(cfg.model), texts, cfg.data.batch_size, cfg.model.max_length)


def _metric(run: Path, tag: str) -> float:
    doc = json.loads((run / "metrics.json").read_text())
    return next(m["value"] for m in doc["metrics"] if m["tag"] == tag)


@pytest.mark.parametrize("export", EXPORTS, ids=lambda e: e.model)
def test_served_optimized_model_equals_the_in_process_one(served_run, served_triton, export):
    in_process = load_run_encoder(served_run / "model", runtime_transforms=export.final)
    local = _heldout_outputs(in_process, served_run)
    served = _heldout_outputs(ServedModel(served_triton.http_url, export.model), served_run)
    assert served.shape == local.shape
    assert float((served - local).abs().max()) <= ATOL[export.precision] * float(local.abs().max())
    fp32 = in_process if not export.final else load_run_encoder(served_run / "model", runtime_transforms=False)
    ffn_out = fp32.family.linears(0)["ffn_out"]
    assert is_nm(fp32.base.get_submodule(ffn_out).weight, 2, 4), "what is served is the 2:4 model"
    layout = json.loads((served_triton.model_repository / export.model / "1" / "icd_layout.json").read_text())
    assert layout["runtime_permutations"].get("output"), "the hidden dim was permuted: the output gather is served"


def test_served_fidelity_matches_the_runs_metrics(served_run, served_triton):
    baseline = _heldout_outputs(ServedModel(served_triton.http_url, BASELINE), served_run)
    optimized = _heldout_outputs(ServedModel(served_triton.http_url, FINAL.model), served_run)
    served = fidelity(baseline, optimized, "embedding")
    count = _config(served_run).data.heldout_texts
    assert served.count == count
    assert served.cos_mean == pytest.approx(_metric(served_run, "cos_mean"), abs=1e-4)
    assert served.cos_min == pytest.approx(_metric(served_run, "cos_min"), abs=1e-4)
    assert abs(served.nn_agreement - _metric(served_run, "nn_agreement")) <= 1.0 / count + 1e-9
    assert served.cos_mean < 1 - 1e-6, "the optimized model is not the baseline"


def test_ab_of_optimized_against_baseline_measures_the_in_process_agreement(served_run, served_triton, tmp_path):
    """A/B through a real nginx router (real weights): both variants answer, the report is written, and the
    agreement it shows is the agreement of the two models in process on the same payloads, run as the server runs
    them (trailing padding trimmed: the int8's activation ranges come from what it runs)."""
    from icd.export.options import DEFAULT_TRIM_PADDING
    from icd.rollout.ab import ABSpec, run_ab_at_endpoint
    from icd.rollout.payloads import text_payloads
    from icd.serve.backend.icd_runtime import trim_batch

    payloads = text_payloads(8, seq_len=32)
    spec = ABSpec(BASELINE, FINAL.model, duration_s=4, concurrency=2, agreement_n=8)
    result, json_path, html_path = run_ab_at_endpoint(served_triton.http_url, spec, payloads,
                                                      tmp_path / "ab_test_results.json")
    assert json_path.is_file() and html_path.is_file()
    assert {r.variant for r in result.records if r.ok} == {BASELINE, FINAL.model}
    models = {BASELINE: load_encoder(_config(served_run).model), FINAL.model: load_run_encoder(served_run / "model")}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    for body in payloads:
        ids, mask = (np.asarray(item["data"], dtype=np.int64).reshape(item["shape"]) for item in body["inputs"])
        ids, mask = (torch.from_numpy(part) for part in trim_batch(ids, mask, DEFAULT_TRIM_PADDING))
        with torch.no_grad():
            for name, model in models.items():
                rows[name].append(model(ids, mask)[0])
    in_process = fidelity(torch.stack(rows[BASELINE]), torch.stack(rows[FINAL.model]), "embedding")
    agreement = json.loads(json_path.read_text())["output_agreement"]
    assert agreement["task"] == "embedding" and agreement["n"] == 8 and agreement["failed_pairs"] == 0
    assert agreement["cosine_mean"] == pytest.approx(in_process.cos_mean, abs=1e-4)
    assert agreement["cosine_min"] == pytest.approx(in_process.cos_min, abs=1e-4)
    assert agreement["nn_agreement"] == pytest.approx(in_process.nn_agreement, abs=1.0 / 8 + 1e-9)
    assert agreement["cosine_min"] < 1 - 1e-6  # two different functions, measured through the router
