"""The generator against the synthetic injected-latency server (icd.load.testserver): reported percentiles are
those of the recorded latencies; a server stall shows up in open-loop latencies (no coordinated omission) but not in
closed loop. Only counts and exact bounds are asserted: CI machines are loaded (accuracy is bench/loadgen.py's)."""

from __future__ import annotations

import urllib.request

import pytest

from icd.load import Hooks, LoadSettings, Target, run_load
from icd.load.testserver import DelaySpec

pytestmark = pytest.mark.e2e

def _quick(**kw) -> LoadSettings:
    base = dict(duration_s=4.0, inputs="random", input_shape=16, workers=1)
    return LoadSettings(**{**base, **kw})


def _recorded(settings: LoadSettings, target: Target) -> tuple[dict, list]:
    """Run in process (``workers=0``) and keep every request's record (intended, sent, done, error)."""
    hooks, records = Hooks(), []
    hooks.on_request.add_listener(records.append)
    return run_load(settings, target, hooks=hooks).to_dict(), records


def _latencies_s(records) -> list[float]:
    return sorted(r.latency_s for r in records if r.error_kind is None and not r.warmup)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_reported_percentiles_are_those_of_the_recorded_latencies(injected_server, mode):
    """Exact checks only (a loaded machine adds latency, so *matching* the injected distribution is the bench's
    job, bench/loadgen.py): no latency is below the least injected delay, and every reported percentile is the
    HDR histogram's value for the request at that rank (3 significant digits: within 0.1 %)."""
    spec = "uniform:50:150"
    server = injected_server(delay=spec)
    settings = _quick(rate=100.0, arrival="poisson", workers=0) if mode == "open" else _quick(concurrency=10,
                                                                                                 workers=0)
    report, records = _recorded(settings, Target(server.url, ["synthetic"]))
    latencies = _latencies_s(records)
    assert report["errors"]["total"] == 0
    assert report["requests"] == len(latencies) > 0
    assert latencies[0] >= DelaySpec.parse(spec).percentile_ms(0.0) / 1000.0
    assert report["latency_ms"]["min"] >= 50.0
    for pct in (50.0, 90.0, 99.0):
        rank = max(int(pct * len(latencies) / 100 + 0.5), 1)  # hdrh's rank of a percentile
        exact_ms = latencies[rank - 1] * 1000.0
        assert exact_ms - 0.002 <= report["latency_ms"][f"p{pct:g}"] <= exact_ms * 1.001 + 0.002, pct


def test_stall_counts_queued_intended_sends_in_open_loop_only(injected_server):
    """During a 600 ms server stall, open loop keeps its schedule (rate × stall intended sends, each waiting from
    its intended time) while closed loop only has its in-flight requests waiting: counts, not timings."""
    stall_ms = 600.0
    server = injected_server(delay="fixed:5", stall_after_s=1.5, stall_ms=stall_ms)
    open_report, open_records = _recorded(_quick(rate=100.0, workers=0), Target(server.url, ["synthetic"]))
    server2 = injected_server(delay="fixed:5", stall_after_s=1.5, stall_ms=stall_ms)  # the stall is once per server
    closed_report, closed_records = _recorded(_quick(concurrency=4, workers=0), Target(server2.url, ["synthetic"]))

    slow_s = stall_ms / 2000.0
    open_slow = sum(latency >= slow_s for latency in _latencies_s(open_records))
    closed_slow = sum(latency >= slow_s for latency in _latencies_s(closed_records))
    assert open_report["latency_ms"]["max"] >= 0.9 * stall_ms
    assert closed_report["latency_ms"]["max"] >= 0.9 * stall_ms
    # open loop: the ~30 sends intended in the stall's first half wait more than half of it
    assert open_slow >= 10, open_slow
    assert closed_slow < open_slow / 2, (closed_slow, open_slow)


def test_backlog_sends_are_late_and_latency_counts_the_queue(injected_server):
    server = injected_server(delay="fixed:50")
    # one connection can do ~20 req/s; 50 req/s arrive → the backlog grows and latency from intended time grows
    report = run_load(_quick(rate=50.0, max_connections=1, duration_s=3.0), Target(server.url, ["synthetic"])).to_dict()
    assert report["late_sends"] > 0.5 * report["sent"]
    assert report["latency_ms"]["p99"] > 500.0  # far above the 50 ms service time
    assert report["unsent_at_end"] > 0


def test_two_workers_merge_exactly_and_series_add_up(injected_server):
    server = injected_server(delay="fixed:2")
    report = run_load(_quick(rate=200.0, workers=2, warmup_s=1.0, duration_s=3.0), Target(server.url, ["synthetic"]))
    data = report.to_dict()
    assert data["generator"]["workers"] == 2
    series = data["models"]["synthetic"]["timeseries"]
    assert sum(r["ok"] for r in series) == data["requests_ok"] + data["models"]["synthetic"]["warmup_excluded"]["ok"]
    assert series[0]["warmup"] and not series[-1]["warmup"]
    assert report.totals["synthetic"].hist.count == data["requests_ok"]
    assert 0 < data["requests"] <= 602  # at most 200/s × 3 s intended in the measured span (a loaded CPU sends fewer)


def test_hooks_and_metrics_port(injected_server, free_port):
    server = injected_server(delay="fixed:2")
    hooks = Hooks()
    records, rows, scraped, events = [], [], [], []
    port = free_port()
    hooks.on_start.add_listener(lambda target, settings: events.append("start"))
    hooks.on_request.add_listener(records.append)
    hooks.on_stop.add_listener(lambda report: events.append("stop"))

    def on_interval(row):
        rows.append(row)
        if not scraped:
            scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    hooks.on_interval.add_listener(on_interval)
    report = run_load(_quick(rate=50.0, workers=0, duration_s=2.0), Target(server.url, ["synthetic"]), hooks=hooks,
                      metrics_port=port).to_dict()
    assert events == ["start", "stop"]
    assert len(records) == report["requests"] and all(r.error_kind is None for r in records)
    assert rows and rows[0].model == "synthetic"
    assert 'icd_load_requests_total{model="synthetic",outcome="ok"}' in scraped[0]
    assert "icd_load_latency_ms" in scraped[0]


def test_on_request_needs_in_process_generator(injected_server):
    hooks = Hooks()
    hooks.on_request.add_listener(lambda r: None)
    with pytest.raises(ValueError, match="workers=0"):
        run_load(_quick(rate=5.0, workers=1), Target("http://127.0.0.1:1", ["x"]), hooks=hooks)


def test_server_errors_are_counted_by_kind(injected_server):
    server = injected_server(delay="fixed:1", error_every=4)
    report = run_load(_quick(concurrency=2, duration_s=1.5), Target(server.url, ["synthetic"])).to_dict()
    errors = report["errors"]
    assert set(errors["by_kind"]) == {"http_500"}
    assert errors["total"] == report["requests"] - report["requests_ok"] > 0
    assert abs(errors["rate"] - 0.25) < 0.05
    assert "injected" in errors["samples"]["http_500"]


def test_stop_event_from_another_thread_gives_partial_report(injected_server):
    import threading

    server = injected_server(delay="fixed:2")
    stop = threading.Event()
    timer = threading.Timer(2.5, stop.set)
    timer.start()
    try:
        report = run_load(_quick(rate=50.0, duration_s=60.0), Target(server.url, ["synthetic"]), stop=stop)
    finally:
        timer.cancel()
    data = report.to_dict()
    assert data["interrupted"] is True and data["requests"] > 0 and data["duration_s"] < 30  # 60 s if not stopped


def _child_cmdlines() -> list[bytes]:
    import os
    from pathlib import Path

    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids += (task / "children").read_text().split()
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except FileNotFoundError:  # ended since listed
            continue
    return out


def test_workers_are_fresh_interpreters_not_forks_of_the_caller(injected_server):
    """A fork copies the caller's gRPC locks without gRPC's threads (a worker hung on its first channel): workers
    must be spawned. A forked child's command line is the caller's; a spawned one runs multiprocessing's spawn_main."""
    from pathlib import Path
    import os

    server = injected_server(delay="fixed:2")
    own = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
    seen: list[list[bytes]] = []
    hooks = Hooks()
    hooks.on_interval.add_listener(lambda row: seen.append(_child_cmdlines()) if not seen else None)
    run_load(_quick(rate=20.0, duration_s=2.0), Target(server.url, ["synthetic"]), hooks=hooks)
    assert seen, "no interval reported while the worker ran"
    workers = [c for c in seen[0] if b"spawn_main" in c]
    assert len(workers) == 1, seen[0]
    assert own not in seen[0]


def test_a_script_without_a_main_guard_gets_one_line_naming_the_guard(injected_server, tmp_path):
    """Spawned workers re-import the caller's script: without the guard the worker fails at start, and the caller
    is told why in one line, before any load."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    server = injected_server(delay="fixed:2")
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\nfrom icd.errors import UserError\nfrom icd.load import LoadSettings, Target, run_load\n"
        "try:\n"
        "    run_load(LoadSettings(rate=10.0, duration_s=1.0, warmup_s=0.0, inputs='random', input_shape=16, "
        "workers=1), Target(sys.argv[1], ['synthetic']))\n"
        "    print('LOAD RAN')\n"
        "except UserError as e:\n"
        "    print('USER ERROR:', e)\n")
    repo = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, str(script), server.url], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": repo})
    assert "USER ERROR: load generator: a worker process failed to start" in done.stdout, done.stdout + done.stderr
    assert 'if __name__ == "__main__":' in done.stdout and "LOAD RAN" not in done.stdout
