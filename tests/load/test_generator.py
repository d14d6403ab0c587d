"""The generator against the synthetic injected-latency server (icd.load.testserver): known delays → known
percentiles; a server stall shows up in open-loop latencies (no coordinated omission) but not in closed loop."""

from __future__ import annotations

import urllib.request

import pytest

from icd.load import Hooks, LoadSettings, Target, run_load
from icd.load.testserver import DelaySpec

pytestmark = pytest.mark.e2e

TOLERANCE = 0.10


def _quick(**kw) -> LoadSettings:
    base = dict(duration_s=4.0, inputs="random", input_shape=16, workers=1)
    return LoadSettings(**{**base, **kw})


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_percentiles_match_injected_distribution(injected_server, mode):
    spec = "uniform:50:150"
    server = injected_server(delay=spec)
    settings = _quick(rate=100.0, arrival="poisson") if mode == "open" else _quick(concurrency=10)
    report = run_load(settings, Target(server.url, ["synthetic"])).to_dict()
    known = DelaySpec.parse(spec)
    assert report["errors"]["total"] == 0
    assert report["requests"] >= 200
    for pct in (50.0, 90.0, 99.0):
        measured = report["latency_ms"][f"p{pct:g}"]
        expected = known.percentile_ms(pct)
        assert abs(measured - expected) <= TOLERANCE * expected, (pct, measured, expected)
    assert report["latency_ms"]["min"] >= 50.0


def test_stall_counts_queued_intended_sends_in_open_loop_only(injected_server):
    stall_ms = 600.0
    server = injected_server(delay="fixed:5", stall_after_s=1.5, stall_ms=stall_ms)
    target = Target(server.url, ["synthetic"])
    open_report = run_load(_quick(rate=100.0), target).to_dict()
    server2 = injected_server(delay="fixed:5", stall_after_s=1.5, stall_ms=stall_ms)  # the stall is once per server
    closed_report = run_load(_quick(concurrency=4), Target(server2.url, ["synthetic"])).to_dict()

    # Open loop: every request intended during the 600 ms stall waits for its end: ~60 requests, latencies spread
    # uniformly over 0..600 ms → p99 near the stall and about half of those above 300 ms.
    o_lat = open_report["latency_ms"]
    assert o_lat["max"] >= 0.9 * stall_ms
    assert o_lat["p95"] >= 0.3 * stall_ms, o_lat
    # Closed loop: only the 4 in-flight requests see the stall; everything else is fast.
    c_lat = closed_report["latency_ms"]
    assert c_lat["max"] >= 0.9 * stall_ms
    assert c_lat["p95"] < 50.0, c_lat
    assert open_report["requests"] >= 350


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
    assert 500 <= data["requests"] <= 700  # 200/s × 3 s measured


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
    assert data["interrupted"] is True and data["requests"] > 50 and data["duration_s"] < 10
