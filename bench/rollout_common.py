"""Shared pieces of the rollout benches (bench/ab_power.py, bench/canary_rollback.py, bench/shadow.py).

* :func:`provenance` — command, machine (CPU model, cores), date (UTC), versions, load average;
* :class:`BusyLoops` — documented background CPU load: N processes spinning ``while True: pass`` (stopped by PID);
* :func:`echo_triton` — the real embedded Triton serving *synthetic* ``echo_delay`` models (not neural networks:
  a configured sleep per batch, an injected error rate) — every latency measured against them is a measurement
  of that synthetic model through the real router and server;
* :func:`router` — a real nginx router in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HIGH_LOAD_PER_CORE = 1.0
"""A load average above this many runnable tasks per core is reported as "high" in the results."""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def exit_on_sigterm() -> None:
    """SIGTERM ends the bench like Ctrl-C: context managers stop Triton, nginx and the busy loops by PID."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def routed_in_processes(url: str, rate: float, seconds: float, seed: int, processes: int) -> tuple[list, float]:
    """Open-loop traffic from ``processes`` client processes (each ``rate / processes`` req/s); all records, sorted
    by send time, and the wall time — a loaded host starves one Python client long before it starves nginx."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.monotonic()
    with ProcessPoolExecutor(processes) as pool:
        parts = list(pool.map(_client_records, [url] * processes, [rate / processes] * processes,
                              [seconds] * processes, [seed * 1000 + i for i in range(processes)]))
    return sorted((r for part in parts for r in part), key=lambda r: r.t), time.monotonic() - t0


def _client_records(url: str, rate: float, seconds: float, seed: int) -> list:
    from icd.load.routed import RoutedSpec, run_routed
    from icd.rollout.payloads import synthetic_payloads

    payloads = synthetic_payloads(64, seq_len=16, seed=seed)
    return run_routed(RoutedSpec(url, lambda i: payloads[i % 64], concurrency=32, duration_s=seconds, rate=rate,
                                 seed=seed))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def provenance(argv: list[str]) -> dict[str, Any]:
    """Everything a results JSON records about how and where it was measured (load at start)."""
    import numpy
    import scipy

    return {
        "command": "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).relative_to(REPO).as_posix()
                                                                  if Path(sys.argv[0]).is_absolute() else sys.argv[0],
                                                                  *argv]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "versions": {"numpy": numpy.__version__, "scipy": scipy.__version__, "nginx": _nginx_version(),
                     "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0 wheel)"},
        "load_average_start": load_average(),
    }


def finish(record: dict[str, Any], name: str) -> Path:
    """Add the end load average and whether the load was high; write ``bench/results/<name>.json``."""
    from icd.io.atomic import write_json_atomic

    record["load_average_end"] = load_average()
    cores = os.cpu_count() or 1
    peak = max(record["load_average_start"][0], record["load_average_end"][0])
    record["load_high"] = peak > HIGH_LOAD_PER_CORE * cores
    record["load_note"] = (f"1-min load average {record['load_average_start'][0]} at start, "
                           f"{record['load_average_end'][0]} at end on {cores} cores"
                           + (" — HIGH: the machine is shared; figures include that noise" if record["load_high"]
                              else ""))
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, record)
    return path


def _nginx_version() -> str:
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr
    except OSError:
        return "not found"
    return out.strip().split("/")[-1]


class BusyLoops:
    """``n`` processes spinning on the CPU (``while True: pass``) — the documented background load."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BusyLoops:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def describe(self) -> dict[str, Any]:
        return {"busy_loop_processes": self.n, "what": "python -c 'while True: pass' at normal priority, one per "
                "process, for the whole run (on top of whatever else the shared machine ran)"}


@contextlib.contextmanager
def echo_triton(models: dict[str, tuple[float, float]]) -> Iterator[Any]:
    """The real embedded Triton serving synthetic ``echo_delay`` models ``{name: (delay_ms, error_rate)}``."""
    from icd.io.ports import free_port
    from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
    from icd.serve.triton_local import TritonServer

    with tempfile.TemporaryDirectory(prefix="icd-bench-") as tmp:
        repo = Path(tmp) / "repo"
        for name, (delay, err) in models.items():
            write_echo_delay_model(repo, EchoDelaySpec(name=name, delay_ms=delay, error_rate=err, seed=7))
        server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                              log_file=Path(tmp) / "triton.log").start(timeout_s=120)
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def router(weights: dict[str, float], upstream: str) -> Iterator[Any]:
    """A real nginx router (public model ``bert``) in a temporary folder; stopped with its comparator."""
    from icd.io.ports import free_port
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_nginx import NginxRouter
    from icd.rollout.router_ops import stop_comparator

    with tempfile.TemporaryDirectory(prefix="icd-bench-router-") as tmp:
        r = NginxRouter(Path(tmp))
        r.start(RouterSpec(free_port(), "bert", weights, {"blue": [upstream]}, "blue"))
        try:
            yield r
        finally:
            stop_comparator(r)
            r.stop()


def client_median_ms(models: dict[str, tuple[float, float]], weights: dict[str, float], variant: str, rate: float,
                     seconds: float) -> float:
    """Client-measured median latency (ms) of ``variant`` through the router, with ``models`` served and traffic
    split by ``weights`` at ``rate`` req/s — how a delay "+x % of the latency" is calibrated on this host."""
    import numpy as np

    from icd.load.routed import RoutedSpec, run_routed
    from icd.rollout.payloads import synthetic_payloads

    payloads = synthetic_payloads(64, seq_len=16, seed=99)
    with echo_triton(models) as server, router(weights, f"127.0.0.1:{server.http_port}") as r:
        spec = RoutedSpec(f"{r.url}/v2/models/bert/infer", lambda i: payloads[i % 64], concurrency=32, rate=rate,
                          duration_s=3)
        run_routed(spec)  # warm-up
        spec.duration_s = seconds
        recs = [x for x in run_routed(spec) if x.ok and x.variant == variant]
    return float(np.median([x.latency_ms for x in recs]))
