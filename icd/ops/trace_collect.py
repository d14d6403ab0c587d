"""Collect Triton traces for one model while driving load (``scripts/collect_performance_trace.py``).

Triton 2.51 only takes the trace *file* at start (``--trace-config triton,file=PATH``; the API answers
"trace file location can not be updated through network protocol"), so the server must have been started with
one (``icd serve --trace-file`` / ``TritonServer(extra_args=...)``). This turns tracing on for the model through
``POST /v2/models/<model>/trace/setting`` (level TIMESTAMPS, rate, log frequency), drives closed-loop load with
the icd load generator, turns tracing off, and copies the trace files Triton wrote (``PATH.<n>``, each holding
``log_frequency`` traces; the last partial batch stays in Triton until it fills) into the output folder, next to
the client-side summary of the same load run. The server must be on this host (it writes the files); a server
in a container writes them under its own path: ``--server-trace-dir`` names the host folder mounted there
(compose: ``deploy/triton/triton-traces``).

Before any load is sent: the output folder is created when missing and refused when it cannot be written, and
the server's trace folder must exist and be writable here. The files are gathered in a hidden staging folder next
to the output and moved in only when the collection succeeded, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from icd.errors import UserError
from icd.io.atomic import write_json_atomic

TRACE_SETTLE_S = 0.5


@dataclass(frozen=True)
class TraceCollectSettings:
    endpoint: str
    model: str
    duration_s: float
    output: Path
    trace_rate: int = 1
    """Trace one request in ``trace_rate``."""
    log_frequency: int = 50
    """Traces per file Triton writes."""
    concurrency: int = 4
    batch_size: int = 1
    input_shape: int = 128
    inputs: str = "random"
    server_trace_dir: Path | None = None
    """Host folder holding the files Triton writes (when Triton's own path is inside a container)."""


def _settings_url(endpoint: str, model: str | None = None) -> str:
    base = endpoint.rstrip("/")
    return f"{base}/v2/models/{model}/trace/setting" if model else f"{base}/v2/trace/setting"


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        resp = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise UserError(f"Triton stopped answering at {url} ({type(exc).__name__}: {exc}); it was READY when the "
                        "collection began: see its log (`icd stack logs triton`); no trace file was copied") from None
    if resp.status_code != 200:
        raise UserError(f"Triton refused trace settings at {url}: {resp.text.strip()[:200]}")
    return resp.json()


def server_trace_file(client: httpx.Client, endpoint: str, server_trace_dir: Path | None = None) -> Path:
    """The trace file the server was started with, as a path on this host, its folder writable.

    Raises:
        UserError: unreachable, no trace file configured, or its folder is not on this host / not writable.
    """
    try:
        resp = client.get(_settings_url(endpoint))
    except httpx.HTTPError as exc:
        raise UserError(f"--endpoint {endpoint}: cannot reach Triton ({exc})") from None
    if resp.status_code != 200:
        raise UserError(f"--endpoint {endpoint}: GET /v2/trace/setting answered {resp.status_code}")
    trace_file = resp.json().get("trace_file") or ""
    if not trace_file:
        raise UserError(f"Triton at {endpoint} has no trace file: start it with `icd stack up` (its Triton always "
                        "has one) or with --trace-config triton,file=PATH (icd serve --trace-file PATH)")
    path = Path(trace_file)
    if server_trace_dir is not None:
        path = Path(server_trace_dir) / path.name
    if not path.parent.is_dir():
        raise UserError(f"Triton writes traces to {path} but {path.parent} is not a folder on this host; run the "
                        "collector on the server's host, or pass --server-trace-dir with the host folder mounted "
                        "there (compose: deploy/triton/triton-traces)")
    from icd.serve.trace_file import writable_folder

    writable_folder(path.parent, "Triton's trace folder")
    return path


def _written(trace_file: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in trace_file.parent.glob(trace_file.name + "*") if p.is_file()}


def _drive_load(settings: TraceCollectSettings) -> dict[str, Any]:
    from icd.load.runner import run_load
    from icd.load.settings import LoadSettings
    from icd.load.target import Target

    load = LoadSettings(duration_s=settings.duration_s, warmup_s=0.0, concurrency=settings.concurrency,
                        batch_size=settings.batch_size, input_shape=settings.input_shape, inputs=settings.inputs,
                        workers=0)
    report = run_load(load, Target(settings.endpoint, (settings.model,)))
    summary = report.model_summary(settings.model)
    summary.pop("timeseries", None)
    return summary


def collect(settings: TraceCollectSettings) -> dict[str, Any]:
    """Enable tracing, drive load, disable tracing, copy the new trace files; returns the collection record.

    Raises:
        UserError: the output cannot be written, the server has no usable trace file, Triton refused the trace
            settings, or no trace file was written (nothing is left in the output folder then).
    """
    from icd.serve.trace_file import writable_folder

    missing = [p for p in (settings.output.resolve(), *settings.output.resolve().parents) if not p.exists()]
    created = missing[-1] if missing else None  # the highest folder this call creates: removed on failure
    output = writable_folder(settings.output, "--output")
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.collect-", dir=output.parent))
    try:
        record = _collect_into(settings, staging)
        for item in sorted(staging.iterdir()):
            item.replace(output / item.name)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def check_model_ready(client: httpx.Client, endpoint: str, model: str) -> None:
    """Refuse a model the server does not serve READY (with Triton's state and reason, or the models it has).

    Raises:
        UserError: unreachable, or the model is not READY.
    """
    try:
        resp = client.get(f"{endpoint.rstrip('/')}/v2/models/{model}/ready")
    except httpx.HTTPError as exc:
        raise UserError(f"--endpoint {endpoint}: cannot reach Triton ({exc})") from None
    if resp.status_code == 200:
        return
    from icd.serve.model_states import model_states

    states = model_states(endpoint.rstrip("/"))
    mine = [s for s in states if s.name == model]
    if mine:
        raise UserError(f"--model {model}: {mine[0].state} at {endpoint}" + (f" ({mine[0].reason})" if mine[0].reason
                                                                             else ""))
    known = ", ".join(s.name for s in states) or "none"
    raise UserError(f"--model {model}: no such model at {endpoint} (models: {known})")


def _collect_into(settings: TraceCollectSettings, staging: Path) -> dict[str, Any]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        check_model_ready(client, settings.endpoint, settings.model)
        trace_file = server_trace_file(client, settings.endpoint, settings.server_trace_dir)
        before = _written(trace_file)
        url = _settings_url(settings.endpoint, settings.model)
        applied = _post(client, url, {"trace_level": ["TIMESTAMPS"], "trace_rate": str(settings.trace_rate),
                                      "trace_count": "-1", "log_frequency": str(settings.log_frequency)})
        try:
            client_summary = _drive_load(settings)
        finally:
            _post(client, url, {"trace_level": ["OFF"]})
    time.sleep(TRACE_SETTLE_S)
    new = [p for p, mtime in _written(trace_file).items() if before.get(p) != mtime]
    if not new:
        raise UserError(f"Triton wrote no trace file under {trace_file}* during the run "
                        f"({client_summary.get('requests')} requests; log_frequency={settings.log_frequency})")
    copied = []
    for path in sorted(new):
        shutil.copy2(path, staging / path.name)
        copied.append(path.name)
    record = {"endpoint": settings.endpoint, "model": settings.model, "duration_s": settings.duration_s,
              "server_trace_file": str(trace_file), "trace_settings": applied, "files": copied,
              "client_requests": client_summary.get("requests")}
    write_json_atomic(staging / "client_summary.json", client_summary)
    write_json_atomic(staging / "collection.json", record)
    return record
