"""CUDA-event timing shared by the GPU benches (bench/gpu_sparse.py, bench/gpu_compaction.py).

Copy it to a GPU host with them: each imports it from its own folder.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def time_cuda(fn: Callable[[], Any], iters: int, warmup: int) -> dict[str, float]:
    """Median and p95 of ``iters`` calls of ``fn`` after ``warmup`` calls, each timed by CUDA events (ms)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    samples.sort()
    return {"median_ms": statistics.median(samples), "p95_ms": samples[min(len(samples) - 1, int(0.95 * len(samples)))],
            "iters": iters}


def measure(label: str, fn: Callable[[], Any], args: argparse.Namespace) -> dict[str, Any]:
    """Time ``fn`` (``args.iters`` / ``args.warmup``) or record why it could not run (never a number for a failed
    path). The first call (compilation, plan search, graph capture) is timed apart as ``first_call_s``."""
    import torch

    try:
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        first_call_s = time.perf_counter() - started
        out = time_cuda(fn, args.iters, args.warmup)
        out["first_call_s"] = first_call_s
        return out
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        return {"error": f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}


def provenance(script: str, argv: list[str]) -> dict[str, Any]:
    """What every GPU results JSON records: command, date, load average before, machine (GPU, host, torch)."""
    import datetime
    import os
    import platform

    import torch

    return {"command": f"python bench/{script} " + " ".join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average_before": list(os.getloadavg()),
            "machine": {"gpu": torch.cuda.get_device_name(0), "host": platform.node(), "cpus": os.cpu_count(),
                        "platform": platform.platform(), "torch": torch.__version__, "cuda": torch.version.cuda}}


def emit(doc: dict[str, Any], out: str | None) -> None:
    """Print the JSON document, and write it to ``out`` too when given."""
    import json

    text = json.dumps(doc, indent=2)
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


def cuda_missing() -> dict[str, Any] | None:
    """The whole document of a run on a machine without CUDA (nothing measured), or None when CUDA is there."""
    import torch

    return None if torch.cuda.is_available() else {"status": "no CUDA: not measured", "torch": torch.__version__}


def measured_document(script: str, argv: list[str], header: dict[str, Any],
                      fill: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """``{"status": "measured", provenance, header}``, filled by ``fill(doc)``, with the seconds it took and the
    load average after."""
    import os

    started = time.perf_counter()
    doc = {"status": "measured", **provenance(script, argv), **header}
    fill(doc)
    doc["seconds"] = time.perf_counter() - started
    doc["load_average_after"] = list(os.getloadavg())
    return doc
