"""Validate a deployment (e.g. the green Triton) before it takes traffic: health, readiness, metadata, golden
outputs against a reference, and the latency SLO under a short load. Every check is reported with evidence.

The golden reference is either a golden file (``{"inputs": [body...], "outputs": [[float...]], "output": name}``,
e.g. recorded from the blue deployment with :func:`record_golden`) or the exported TorchScript ``model.pt`` in a
model repository, run here on real tokenized text. The golden check passes on min cosine and max |diff| and
reports the agreement that fits the model's task (embeddings: cosine mean / min and nearest-neighbour agreement;
classifiers: argmax agreement and logit cosine).

These checks are also the ``validate`` webhook of the rollout loop (:mod:`icd.rollout.webhooks`).

Example:
    report = validate_deployment(ValidationSpec("http://127.0.0.1:8001", "bert_icd", test_duration_s=30,
                                                golden_file=Path("golden.json")))
    sys.exit(0 if report.passed else 1)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from icd.errors import ArtefactError, UserError
from icd.io.atomic import write_json_atomic
from icd.load.routed import RoutedSpec, run_routed
from icd.rollout.agreement import agreement, cosine_rows, task_for_output
from icd.rollout.payloads import named_output, text_payloads

DEFAULT_SLO_P95_MS = 250.0
DEFAULT_MIN_COSINE = 0.999
DEFAULT_ATOL = 1e-3
DEFAULT_GOLDEN_N = 16


@dataclass
class ValidationSpec:
    """What to validate and the pass criteria."""

    endpoint: str
    model: str
    test_duration_s: float = 30.0
    concurrency: int = 4
    slo_p95_ms: float = DEFAULT_SLO_P95_MS
    max_error_rate: float = 0.0
    golden_file: Path | None = None
    model_repository: Path | None = None
    min_cosine: float = DEFAULT_MIN_COSINE
    atol: float = DEFAULT_ATOL
    golden_n: int = DEFAULT_GOLDEN_N
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        """Bad values are user errors before any check runs."""
        if self.concurrency < 1:
            raise UserError(f"--concurrency must be >= 1, got {self.concurrency}")
        if not (math.isfinite(self.slo_p95_ms) and self.slo_p95_ms > 0):
            raise UserError(f"--slo-p95-ms must be > 0, got {self.slo_p95_ms:g}")


@dataclass(frozen=True)
class CheckOutcome:
    """One validation check with its evidence."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationReport:
    endpoint: str
    model: str
    checks: list[CheckOutcome]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "model": self.model, "passed": self.passed,
                "checks": [asdict(c) for c in self.checks]}


def _get(client: httpx.Client, url: str) -> httpx.Response | str:
    try:
        return client.get(url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"


def check_health(client: httpx.Client, spec: ValidationSpec) -> CheckOutcome:
    resp = _get(client, f"{spec.endpoint}/v2/health/live")
    ok = not isinstance(resp, str) and resp.status_code == 200
    return CheckOutcome("health", ok, resp if isinstance(resp, str) else f"GET /v2/health/live -> {resp.status_code}")


def check_ready(client: httpx.Client, spec: ValidationSpec) -> CheckOutcome:
    from icd.rollout.preflight import repository_index

    details = []
    ok = True
    for path in ("/v2/health/ready", f"/v2/models/{spec.model}/ready"):
        resp = _get(client, spec.endpoint + path)
        ok = ok and not isinstance(resp, str) and resp.status_code == 200
        details.append(f"GET {path} -> {resp if isinstance(resp, str) else resp.status_code}")
    if not ok:
        index = repository_index(spec.endpoint.removeprefix("http://").removeprefix("https://"))
        if index:
            details.append(f"{spec.model}: {index.get(spec.model, 'not in the model repository')}; served: "
                           + ", ".join(f"{k} {v}" for k, v in sorted(index.items())))
    return CheckOutcome("readiness", ok, "; ".join(details))


def check_metadata(client: httpx.Client, spec: ValidationSpec) -> tuple[CheckOutcome, dict[str, Any]]:
    resp = _get(client, f"{spec.endpoint}/v2/models/{spec.model}")
    if isinstance(resp, str) or resp.status_code != 200:
        return CheckOutcome("metadata", False, f"GET /v2/models/{spec.model} -> "
                            f"{resp if isinstance(resp, str) else resp.status_code}"), {}
    meta = resp.json()
    inputs = {t["name"] for t in meta.get("inputs", [])}
    ok = {"input_ids", "attention_mask"} <= inputs and bool(meta.get("outputs"))
    return CheckOutcome("metadata", ok, f"inputs {sorted(inputs)}, outputs {[t['name'] for t in meta.get('outputs', [])]}",
                        {"name": meta.get("name"), "versions": meta.get("versions")}), meta


def load_golden(path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    try:
        data = json.loads(Path(path).read_text())
        outputs = np.asarray(data["outputs"], dtype=float)
        if outputs.ndim != 2 or len(data["inputs"]) != outputs.shape[0]:
            raise ValueError(f"{len(data['inputs'])} inputs but outputs of shape {outputs.shape}")
        return list(data["inputs"]), outputs
    except FileNotFoundError:
        raise UserError(f"--golden {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtefactError(f"{path}: not a golden file ({{'inputs': [...], 'outputs': [...]}}): {exc}") from exc


def reference_from_repository(repo: Path, model: str, bodies: list[dict[str, Any]]) -> np.ndarray:
    """Run the exported TorchScript (``<repo>/<model>/<latest>/model.pt``) on the bodies here (CPU)."""
    import torch

    model_dir = Path(repo) / model
    versions = sorted((p for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions or not (versions[-1] / "model.pt").exists():
        raise ArtefactError(f"{model_dir}: no <version>/model.pt to compute the golden reference from")
    scripted = torch.jit.load(str(versions[-1] / "model.pt"), map_location="cpu").eval()
    perm = None
    layout = versions[-1] / "icd_layout.json"
    if layout.exists():
        perm = json.loads(layout.read_text()).get("runtime_permutations", {}).get("output")
    outs = []
    with torch.no_grad():
        for body in bodies:
            arrays = {t["name"]: np.asarray(t["data"], dtype=np.int64).reshape(t["shape"]) for t in body["inputs"]}
            out = scripted(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(arrays["attention_mask"]))
            if perm is not None:
                out = out.index_select(-1, torch.tensor(perm, dtype=torch.long))
            outs.append(out.float().numpy().ravel())
    return np.stack(outs)


def infer_all(client: httpx.Client, endpoint: str, model: str, bodies: list[dict[str, Any]]) -> tuple[str, np.ndarray]:
    """The output name and the server's outputs for each body (raises ``httpx.HTTPError`` / ``ValueError``)."""
    outs, name = [], ""
    for body in bodies:
        resp = client.post(f"{endpoint}/v2/models/{model}/infer", json=body)
        if resp.status_code != 200:
            raise ValueError(f"infer -> {resp.status_code}: {resp.text[:200]}")
        name, vector = named_output(resp.json())
        outs.append(vector)
    return name, np.stack(outs)


def check_golden(client: httpx.Client, spec: ValidationSpec) -> CheckOutcome:
    if spec.golden_file is not None:
        bodies, reference = load_golden(spec.golden_file)
        source = f"golden file {spec.golden_file}"
    elif spec.model_repository is not None:
        bodies = text_payloads(spec.golden_n)
        try:
            reference = reference_from_repository(spec.model_repository, spec.model, bodies)
        except ArtefactError as exc:
            return CheckOutcome("golden outputs", False, f"not measured: {exc}")
        source = f"TorchScript in {spec.model_repository}"
    else:
        return CheckOutcome("golden outputs", False, "not measured: no --golden file and no --model-repository given")
    try:
        name, served = infer_all(client, spec.endpoint, spec.model, bodies)
    except (httpx.HTTPError, ValueError) as exc:
        return CheckOutcome("golden outputs", False, f"inference failed: {exc}")
    if served.shape != reference.shape:
        return CheckOutcome("golden outputs", False, f"shape {served.shape} != reference {reference.shape}")
    cos = cosine_rows(served, reference)
    max_abs = float(np.max(np.abs(served - reference)))
    ok = float(cos.min()) >= spec.min_cosine and max_abs <= spec.atol
    fits = agreement(task_for_output(name), reference, served)
    return CheckOutcome("golden outputs", ok, f"{len(bodies)} inputs vs {source}: min cosine {cos.min():.6f} "
                        f"(>= {spec.min_cosine}), max |diff| {max_abs:.2e} (<= {spec.atol}); {fits.text()}",
                        {"min_cosine": float(cos.min()), "max_abs_diff": max_abs, "n": len(bodies),
                         "agreement": fits.to_dict()})


def check_latency_slo(spec: ValidationSpec, bodies: list[dict[str, Any]]) -> CheckOutcome:
    records = run_routed(RoutedSpec(f"{spec.endpoint}/v2/models/{spec.model}/infer",
                                    lambda i: bodies[i % len(bodies)], concurrency=spec.concurrency,
                                    duration_s=spec.test_duration_s, timeout_s=spec.timeout_s))
    if not records:
        return CheckOutcome("latency SLO", False, "not measured: no request completed")
    ok_lat = [r.latency_ms for r in records if r.ok]
    errors = sum(not r.ok for r in records)
    err_rate = errors / len(records)
    p95 = float(np.percentile(ok_lat, 95)) if ok_lat else float("nan")
    passed = bool(ok_lat) and p95 <= spec.slo_p95_ms and err_rate <= spec.max_error_rate
    return CheckOutcome("latency SLO", passed, f"{len(records)} requests in {spec.test_duration_s:g}s at concurrency "
                        f"{spec.concurrency}: p95 {p95:.1f} ms (<= {spec.slo_p95_ms:g}), errors {err_rate:.2%} "
                        f"(<= {spec.max_error_rate:.2%})",
                        {"requests": len(records), "p95_ms": p95, "error_rate": err_rate,
                         "throughput_rps": len(records) / spec.test_duration_s})


def validate_deployment(spec: ValidationSpec) -> ValidationReport:
    """Run every check in order; stops after the first of health/readiness/metadata that fails."""
    checks: list[CheckOutcome] = []
    with httpx.Client(timeout=spec.timeout_s) as client:
        for step in (check_health, check_ready):
            checks.append(step(client, spec))
            if not checks[-1].passed:
                return ValidationReport(spec.endpoint, spec.model, checks)
        meta_check, _ = check_metadata(client, spec)
        checks.append(meta_check)
        if not meta_check.passed:
            return ValidationReport(spec.endpoint, spec.model, checks)
        checks.append(check_golden(client, spec))
    bodies = load_golden(spec.golden_file)[0] if spec.golden_file else _load_bodies(spec)
    checks.append(check_latency_slo(spec, bodies))
    return ValidationReport(spec.endpoint, spec.model, checks)


def _load_bodies(spec: ValidationSpec) -> list[dict[str, Any]]:
    return text_payloads(spec.golden_n)


def record_golden(endpoint: str, model: str, bodies: list[dict[str, Any]], path: Path) -> np.ndarray:
    """Record the outputs ``endpoint`` gives for ``bodies`` as a golden file (e.g. from blue, before a switch)."""
    with httpx.Client(timeout=30) as client:
        name, outputs = infer_all(client, endpoint, model, bodies)
    write_json_atomic(path, {"endpoint": endpoint, "model": model, "output": name, "inputs": bodies,
                             "outputs": outputs.tolist()})
    return outputs
