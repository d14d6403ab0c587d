"""Triton trace files (``--trace-config triton,file=...``, level TIMESTAMPS, Triton 2.51 JSON) → latency phases.

A trace file is a JSON array of entries ``{"id", "model_name", "model_version"}`` and
``{"id", "timestamps": [{"name", "ns"}]}``; one request's entries share an ``id``. Phases of one request:

=================  =============================================
queue              COMPUTE_START − QUEUE_START
compute_input      COMPUTE_INPUT_END − COMPUTE_START
compute_infer      COMPUTE_OUTPUT_START − COMPUTE_INPUT_END
compute_output     COMPUTE_END − COMPUTE_OUTPUT_START
server_overhead    server total − the four above (HTTP parsing, request setup, response send)
server_total       HTTP_SEND_END − HTTP_RECV_START (gRPC: GRPC_*; else REQUEST_END − REQUEST_START)
=================  =============================================

``network_client`` is the client-observed mean latency (from the load run that produced the traces) minus the
mean server total: an aggregate, not a per-request figure (client and server clocks are not matched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icd.errors import ArtefactError

PHASES = ("queue", "compute_input", "compute_infer", "compute_output", "server_overhead")
_PHASE_BOUNDS = {
    "queue": ("QUEUE_START", "COMPUTE_START"),
    "compute_input": ("COMPUTE_START", "COMPUTE_INPUT_END"),
    "compute_infer": ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"),
    "compute_output": ("COMPUTE_OUTPUT_START", "COMPUTE_END"),
}
_TOTAL_BOUNDS = (("HTTP_RECV_START", "HTTP_SEND_END"), ("GRPC_WAITREAD_START", "GRPC_SEND_END"),
                 ("REQUEST_START", "REQUEST_END"))


@dataclass(frozen=True)
class RequestTrace:
    """Phase durations (ms) of one traced request."""

    model: str
    version: str
    phases_ms: dict[str, float]
    total_ms: float


def read_trace_entries(path: Path) -> list[dict]:
    """Entries of one trace file (a JSON array).

    Raises:
        ArtefactError: unreadable or not a JSON array.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path}: not a Triton JSON trace file ({exc})") from None
    if not isinstance(doc, list):
        raise ArtefactError(f"{path}: not a Triton JSON trace file (expected a JSON array)")
    return doc


def trace_files(folder: Path) -> list[Path]:
    """Trace files in ``folder`` (``*.json`` and ``*.json.<n>``, not the collector's own JSON)."""
    own = {"collection.json", "client_summary.json", "trace_analysis.json"}
    files = [p for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name not in own
             and (p.suffix == ".json" or p.name.rsplit(".", 1)[-1].isdigit())]
    return files


def _request(meta: dict, stamps: dict[str, int]) -> RequestTrace | None:
    for start, end in _TOTAL_BOUNDS:
        if start in stamps and end in stamps:
            total = (stamps[end] - stamps[start]) / 1e6
            break
    else:
        return None
    if not all(name in stamps for bounds in _PHASE_BOUNDS.values() for name in bounds):
        return None
    phases = {phase: (stamps[b] - stamps[a]) / 1e6 for phase, (a, b) in _PHASE_BOUNDS.items()}
    phases["server_overhead"] = max(0.0, total - sum(phases.values()))
    return RequestTrace(str(meta.get("model_name", "?")), str(meta.get("model_version", "?")), phases, total)


def parse_traces(entries: list[dict]) -> tuple[list[RequestTrace], int]:
    """Complete request traces from one file's entries, and how many traces were incomplete."""
    meta: dict[object, dict] = {}
    stamps: dict[object, dict[str, int]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "id" not in entry:
            continue
        key = entry["id"]
        if "model_name" in entry:
            meta[key] = entry
        for stamp in entry.get("timestamps", ()):
            stamps.setdefault(key, {}).setdefault(stamp["name"], int(stamp["ns"]))
    out, incomplete = [], 0
    for key, names in stamps.items():
        request = _request(meta.get(key, {}), names)
        if request is None:
            incomplete += 1
        else:
            out.append(request)
    return out, incomplete


def load_folder(folder: Path) -> tuple[list[RequestTrace], int, int]:
    """Every complete request trace in ``folder``; also (files read, incomplete traces).

    Raises:
        ArtefactError: the folder does not exist or holds no trace file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtefactError(f"{folder}: trace folder not found")
    files = trace_files(folder)
    if not files:
        raise ArtefactError(f"{folder}: no Triton trace files (trace.json.<n>) in it")
    requests: list[RequestTrace] = []
    incomplete = 0
    for path in files:
        got, bad = parse_traces(read_trace_entries(path))
        requests += got
        incomplete += bad
    return requests, len(files), incomplete


def breakdown(requests: list[RequestTrace], client_mean_ms: float | None) -> dict:
    """Mean / p50 / p95 per phase, shares of the mean, and the bottleneck (largest mean share)."""
    if not requests:
        raise ArtefactError("no complete request trace (need TIMESTAMPS level traces)")
    rows = {}
    for phase in PHASES:
        values = np.array([r.phases_ms[phase] for r in requests])
        rows[phase] = {"mean_ms": float(values.mean()), "p50_ms": float(np.percentile(values, 50)),
                       "p95_ms": float(np.percentile(values, 95))}
    totals = np.array([r.total_ms for r in requests])
    server_mean = float(totals.mean())
    network = None if client_mean_ms is None else max(0.0, client_mean_ms - server_mean)
    if network is not None:
        rows["network_client"] = {"mean_ms": network, "p50_ms": None, "p95_ms": None}
    end_to_end = server_mean + (network or 0.0)
    for row in rows.values():
        row["share"] = row["mean_ms"] / end_to_end if end_to_end > 0 else 0.0
    bottleneck = max(rows, key=lambda phase: rows[phase]["mean_ms"])
    return {
        "requests": len(requests),
        "models": sorted({r.model for r in requests}),
        "server_total_ms": {"mean": server_mean, "p50": float(np.percentile(totals, 50)),
                            "p95": float(np.percentile(totals, 95))},
        "client_mean_ms": client_mean_ms,
        "phases": rows,
        "bottleneck": bottleneck,
        "network_client_how": None if network is None else "client mean latency − server mean total (aggregate)",
    }
