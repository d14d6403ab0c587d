"""A short serve check for ``make demo``: export both models, serve them, one real request each over HTTP and
gRPC, compared with the in-process models.

Example:
    >>> from icd.serve.smoke import export_and_check
    >>> result = export_and_check(Path("runs/bert_production"), Path("deploy/triton/models"))  # doctest: +SKIP
    >>> print("\\n".join(result.lines()))                                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from icd.errors import UserError
from icd.io.ports import free_port

SMOKE_TOLERANCE = 1e-5
SMOKE_TEXTS = (
    "Return the absolute value of the argument.",
    "Open file and return a corresponding file object.",
)




@dataclass
class ModelCheck:
    """One served model compared with its in-process reference."""

    name: str
    max_abs_diff_http: float
    max_abs_diff_grpc: float

    @property
    def ok(self) -> bool:
        return max(self.max_abs_diff_http, self.max_abs_diff_grpc) <= SMOKE_TOLERANCE


@dataclass
class SmokeResult:
    """What :func:`export_and_check` did."""

    repository: Path
    checks: list[ModelCheck] = field(default_factory=list)
    metrics_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def lines(self) -> list[str]:
        rows = [f"served {self.repository} on the embedded Triton:"]
        rows += [f"  {c.name}: max |served - in-process| HTTP {c.max_abs_diff_http:.2e}, gRPC "
                 f"{c.max_abs_diff_grpc:.2e} ({'ok' if c.ok else 'MISMATCH'})" for c in self.checks]
        return rows + [f"  {line}" for line in self.metrics_lines]


def export_and_check(run_dir: Path, repository: Path, timeout_s: float = 300.0) -> SmokeResult:
    """Export ``bert_icd`` and ``bert_baseline`` from ``run_dir`` into ``repository``, serve, compare, stop.

    Raises:
        UserError: an export or the server failed (one line).
    """
    import httpx
    import torch
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from icd.config.schema import IcdConfig
    from icd.export.options import ExportOptions
    from icd.export.repository import export_model
    from icd.model.loader import load_encoder
    from icd.pipeline.model_store import load_run_encoder
    from icd.serve.triton_local import ModelControlMode, TritonServer

    export_model(run_dir, repository, ExportOptions(model_name="bert_icd"))
    export_model(run_dir, repository, ExportOptions(model_name="bert_baseline", baseline=True))
    lock = json.loads((Path(run_dir) / "config.lock.json").read_text())
    references = {"bert_icd": load_run_encoder(Path(run_dir) / "model"),
                  "bert_baseline": load_encoder(IcdConfig.model_validate(lock).model)}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(run_dir) / "model"))
    batch = tokenizer(list(SMOKE_TEXTS), padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
    result = SmokeResult(Path(repository))
    server = TritonServer(repository, free_port(), free_port(), free_port(),
                          model_control_mode=ModelControlMode.EXPLICIT, load_models=tuple(references))
    with server.start(timeout_s=timeout_s):
        for name, model in references.items():
            if not server.model_ready(name):
                raise UserError(f"model {name} did not load: {server.log_tail()}")
            with torch.no_grad():
                expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
                got_http = client.infer(name, _inputs(httpclient, ids, mask)).as_numpy("logits")
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                got_grpc = client.infer(name, _inputs(grpcclient, ids, mask)).as_numpy("logits")
            result.checks.append(ModelCheck(name, float(np.abs(got_http - expected).max()),
                                            float(np.abs(got_grpc - expected).max())))
        text = httpx.get(server.metrics_url, trust_env=False, timeout=10).text
        result.metrics_lines = [line for line in text.splitlines() if line.startswith("triton_icd_")]
    return result


def _inputs(module, ids: np.ndarray, mask: np.ndarray):
    inputs = [module.InferInput("input_ids", list(ids.shape), "INT64"),
              module.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    return inputs
