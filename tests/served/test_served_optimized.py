"""The optimizer's output, served: ``icd run`` → ``icd export-triton`` → embedded Triton (real MiniLM weights).

* served outputs equal the in-process optimized model (``load_run_encoder``) on the run's own held-out texts,
  batched as the run's measure stage batched them;
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
from tests.served.conftest import BASELINE, MODELS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ATOL = 1e-4  # relative to the output scale: TorchScript in Triton (1 thread) vs eager in process (2 threads)


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
        with httpclient.InferenceServerClient(self.url) as client:
            result = client.infer(self.model, inputs)
            name = result.get_response()["outputs"][0]["name"]
            return torch.from_numpy(result.as_numpy(name).copy())


def _run_config(run: Path) -> IcdConfig:
    return IcdConfig.model_validate(json.loads((run / "config.lock.json").read_text()))


def _heldout_outputs(model, run: Path) -> torch.Tensor:
    """Outputs for the run's held-out texts, one request per batch of the measure stage, in text order."""
    cfg = _run_config(run)
    texts = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed).heldout
    return encode(model, load_tokenizer(cfg.model), texts, cfg.data.batch_size, cfg.model.max_length)


def _metric(run: Path, tag: str) -> float:
    doc = json.loads((run / "metrics.json").read_text())
    return next(m["value"] for m in doc["metrics"] if m["tag"] == tag)


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_served_optimized_model_equals_the_in_process_one(served_runs, served_triton, variant):
    run = served_runs[variant]
    local = _heldout_outputs(load_run_encoder(run / "model"), run)
    served = _heldout_outputs(ServedModel(served_triton.http_url, MODELS[variant]), run)
    assert served.shape == local.shape
    scale = float(local.abs().max())
    assert float((served - local).abs().max()) <= ATOL * scale
    layout = json.loads((served_triton.model_repository / MODELS[variant] / "1" / "icd_layout.json").read_text())
    assert layout["runtime_permutations"].get("output"), "the hidden dim was permuted: the output gather is served"


@pytest.mark.parametrize("variant", sorted(MODELS))
def test_served_fidelity_matches_the_runs_metrics(served_runs, served_triton, variant):
    run = served_runs[variant]
    baseline = _heldout_outputs(ServedModel(served_triton.http_url, BASELINE), run)
    optimized = _heldout_outputs(ServedModel(served_triton.http_url, MODELS[variant]), run)
    served = fidelity(baseline, optimized, "embedding")
    count = _run_config(run).data.heldout_texts
    assert served.count == count
    assert served.cos_mean == pytest.approx(_metric(run, "cos_mean"), abs=1e-4)
    assert served.cos_min == pytest.approx(_metric(run, "cos_min"), abs=1e-4)
    assert abs(served.nn_agreement - _metric(run, "nn_agreement")) <= 1.0 / count + 1e-9
    assert served.cos_mean < 1 - 1e-6, "the optimized model is not the baseline"


def test_ab_of_optimized_against_baseline_measures_the_in_process_agreement(served_runs, served_triton, tmp_path):
    """A/B through a real nginx router (real weights): both variants answer, the report is written, and the
    agreement it shows is the agreement of the two models in process on the same payloads."""
    from icd.rollout.ab import ABSpec, run_ab_at_endpoint
    from icd.rollout.payloads import text_payloads

    payloads = text_payloads(8, seq_len=32)
    spec = ABSpec(BASELINE, MODELS["int8"], duration_s=4, rate=None, concurrency=2, agreement_n=8)  # closed loop
    result, json_path, html_path = run_ab_at_endpoint(served_triton.http_url, spec, payloads,
                                                      tmp_path / "ab_test_results.json")
    assert json_path.is_file() and html_path.is_file()
    served = {r.variant for r in result.records if r.ok}
    assert served == {BASELINE, MODELS["int8"]} and all(r.ok for r in result.records)
    run = served_runs["int8"]
    models = {BASELINE: load_encoder(_run_config(run).model), MODELS["int8"]: load_run_encoder(run / "model")}
    cosines = []
    for body in payloads:
        ids, mask = (torch.tensor(item["data"]).reshape(item["shape"]) for item in body["inputs"])
        with torch.no_grad():
            a, b = (models[m](ids, mask)[0].double() for m in (BASELINE, MODELS["int8"]))
        cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    agreement = result.agreement.to_dict()  # an embedding model: cosine and NN agreement, no argmax
    assert agreement["n"] == 8 and agreement["task"] == "embedding" and "argmax_agreement" not in agreement
    assert agreement["cosine_mean"] == pytest.approx(float(np.mean(cosines)), abs=1e-4)
    assert agreement["cosine_min"] == pytest.approx(float(np.min(cosines)), abs=1e-4)
    assert agreement["cosine_min"] < 1 - 1e-6  # two different functions, measured through the router
