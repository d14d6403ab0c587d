from __future__ import annotations

import json

import pytest

from icd.rollout.canary_spec import CanarySpec, MetricCheck, MetricKind, ThresholdRange
from icd.rollout.providers import AccessLogProvider, NoValuesFound, ProviderError, QueryContext
from icd.rollout.router_exporter import RouterExporter
from icd.rollout.router_log import AccessLogReader


def _line(t, variant, status=200, rt=0.010):
    return json.dumps({"t": t, "variant": variant, "status": status, "request_time": rt, "upstream_time": "0.009",
                       "upstream": "127.0.0.1:1", "colour": "blue", "generation": 3}) + "\n"


def test_reader_is_incremental_and_ignores_partial_lines(tmp_path):
    log = tmp_path / "access.jsonl"
    log.write_text(_line(100.0, "a") + _line(101.0, "b") + '{"t": 102, "vari')
    reader = AccessLogReader(log)
    assert [r.variant for r in reader.poll()] == ["a", "b"]
    with log.open("a") as f:
        f.write('ant": "c", "status": 500, "request_time": 0.02}\n')
    new = reader.poll()
    assert [(r.variant, r.is_error) for r in new] == [("c", True)]
    assert [r.variant for r in reader.since(101.0)] == ["b", "c"]


def test_access_log_provider_relative_checks(tmp_path):
    log = tmp_path / "access.jsonl"
    lines = [_line(1000 + i * 0.01, "base", rt=0.010) for i in range(50)]
    lines += [_line(1000 + i * 0.01, "new", rt=0.020, status=500 if i < 5 else 200) for i in range(50)]
    log.write_text("".join(lines))
    provider = AccessLogProvider(log, clock=lambda: 1001.0)
    spec = CanarySpec.progressive("base", "new", interval_s=5, min_samples=10)
    ctx = QueryContext("base", "new", 5, 10)
    p95, how = provider.measure(spec.metrics[0], ctx)
    assert p95 == pytest.approx(100.0) and "20.0 ms vs 10.0 ms" in how
    err, _ = provider.measure(spec.metrics[1], ctx)
    assert err == pytest.approx(10.0)
    with pytest.raises(NoValuesFound, match="< 100"):
        provider.measure(spec.metrics[0], QueryContext("base", "new", 5, 100))
    promql = MetricCheck(name="x", kind=MetricKind.PROMQL, threshold_range=ThresholdRange(max=1), query="up")
    with pytest.raises(ProviderError, match="Prometheus"):
        provider.measure(promql, ctx)


def test_exporter_counts_per_variant(tmp_path, free_port):
    log = tmp_path / "access.jsonl"
    log.write_text(_line(1.0, "old"))
    exporter = RouterExporter(log, free_port())  # starts at the end: the old line is not counted
    with log.open("a") as f:
        f.write(_line(2.0, "a") + _line(2.1, "a", status=502) + _line(2.2, "b", rt=0.3))
    assert exporter.poll_once() == 3
    get = exporter.registry.get_sample_value
    assert get("icd_router_requests_total", {"variant": "a", "code": "200", "colour": "blue"}) == 1
    assert get("icd_router_requests_total", {"variant": "a", "code": "502", "colour": "blue"}) == 1
    assert get("icd_router_request_duration_seconds_count", {"variant": "b"}) == 1
    assert get("icd_router_request_duration_seconds_bucket", {"variant": "b", "le": "0.2"}) == 0
    assert get("icd_router_requests_total", {"variant": "old", "code": "200", "colour": "blue"}) is None
