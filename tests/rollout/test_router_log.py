from __future__ import annotations

import http.server
import json
import threading

import pytest

from icd.rollout.canary_spec import CanarySpec, MetricCheck, MetricKind, ThresholdRange
from icd.rollout.providers import (
    AccessLogProvider,
    NoValuesFound,
    PrometheusProvider,
    ProviderError,
    QueryContext,
    ShadowLogProvider,
)
from icd.rollout.router_exporter import RouterExporter
from icd.rollout.router_log import AccessLogReader


def _line(t, variant, status=200, rt=0.010, colour="blue"):
    return json.dumps({"t": t, "variant": variant, "status": status, "request_time": rt, "upstream_time": "0.009",
                       "upstream": "127.0.0.1:1", "colour": colour, "generation": 3, "rid": f"r{t}"}) + "\n"


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
    assert get("icd_router_request_duration_seconds_count", {"variant": "b", "colour": "blue"}) == 1
    assert get("icd_router_request_duration_seconds_bucket", {"variant": "b", "colour": "blue", "le": "0.2"}) == 0
    assert get("icd_router_requests_total", {"variant": "old", "code": "200", "colour": "blue"}) is None


def test_bluegreen_checks_judge_the_target_colour_only(tmp_path):
    log = tmp_path / "access.jsonl"
    lines = [_line(1000 + i * 0.01, "m", rt=0.010, colour="blue") for i in range(30)]
    lines += [_line(1000 + i * 0.01, "m", rt=0.300, status=500 if i < 3 else 200, colour="green") for i in range(30)]
    log.write_text("".join(lines))
    provider = AccessLogProvider(log, clock=lambda: 1001.0)
    ctx = QueryContext("blue", "green", 5, 10, by="colour")
    p95 = MetricCheck(name="p", kind=MetricKind.P95_LATENCY_MS, threshold_range=ThresholdRange(max=250))
    err = MetricCheck(name="e", kind=MetricKind.ERROR_RATE_PCT, threshold_range=ThresholdRange(max=1))
    assert provider.measure(p95, ctx)[0] == pytest.approx(300.0)
    assert provider.measure(err, ctx)[0] == pytest.approx(10.0)
    with pytest.raises(NoValuesFound, match="0 purple"):
        provider.measure(err, QueryContext("blue", "purple", 5, 10, by="colour"))


def _shadow(t, outcome="compared", cosine=1.0, agree=None, pm=10.0, cm=12.0):
    return json.dumps({"t": t, "rid": "r", "primary": "base", "candidate": "new", "outcome": outcome, "task":
                       "classifier" if agree is not None else "embedding", "primary_ms": pm, "candidate_ms": cm,
                       "cosine": cosine, "argmax_agree": agree, "error": ""}) + "\n"


def test_shadow_provider_judges_agreement_latency_and_errors(tmp_path):
    from icd.rollout.canary_spec import agreement_check

    log = tmp_path / "shadow.jsonl"
    log.write_text("".join(_shadow(1000 + i * 0.01, cosine=0.98 + 0.0001 * i) for i in range(40))
                   + _shadow(1000.5, outcome="candidate_error"))
    provider = ShadowLogProvider(log, clock=lambda: 1001.0)
    ctx = QueryContext("base", "new", 5, 10)
    value, how = provider.measure(agreement_check(0.99), ctx)
    assert 0.98 < value < 0.99 and "embedding" in how
    lat = MetricCheck(name="l", kind=MetricKind.SHADOW_P95_INCREASE_PCT, threshold_range=ThresholdRange(max=5))
    assert provider.measure(lat, ctx)[0] == pytest.approx(20.0)
    err = MetricCheck(name="e", kind=MetricKind.SHADOW_ERROR_RATE_PCT, threshold_range=ThresholdRange(max=5))
    assert provider.measure(err, ctx)[0] == pytest.approx(100 / 41)
    classifier = tmp_path / "c.jsonl"
    classifier.write_text("".join(_shadow(1000 + i * 0.01, agree=i % 10 != 0) for i in range(20)))
    assert ShadowLogProvider(classifier, clock=lambda: 1001.0).measure(agreement_check(), ctx)[0] == 0.9
    with pytest.raises(NoValuesFound, match="mirroring on"):
        ShadowLogProvider(tmp_path / "none.jsonl").measure(agreement_check(), ctx)


class _NotPrometheus(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>a login page</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_prometheus_provider_errors_are_clear_provider_errors(free_port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        spec = CanarySpec.progressive("base", "new")
        with pytest.raises(ProviderError, match=r"not a Prometheus API answer \(HTTP 200, text/html"):
            PrometheusProvider(f"http://127.0.0.1:{server.server_address[1]}").measure(
                spec.metrics[0], QueryContext("base", "new", 5))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    with pytest.raises(ProviderError, match="not reachable"):
        PrometheusProvider(f"http://127.0.0.1:{free_port()}").run_query("up")


def test_every_default_promql_template_parses_once_rules_are_expanded(tmp_path):
    """What the Prometheus provider sends for each check kind is valid PromQL without icd's recording rules."""
    import yaml

    from icd.monitor import promtool
    from icd.rollout.canary_spec import TEMPLATES

    provider = PrometheusProvider("http://127.0.0.1:1")
    rules = []
    for i, kind in enumerate(TEMPLATES):
        check = MetricCheck(name=kind.value, kind=kind, threshold_range=ThresholdRange())
        for selector in ('variant="new"', 'colour="green"'):
            query = provider._expand(check.render("new", "base", 5, selector))
            assert "icd:" not in query and "{{" not in query
            rules.append({"record": f"check:kind{i}:{len(rules)}", "expr": query})
    (tmp_path / "q.yml").write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    result = promtool.check_rules(tmp_path / "q.yml")
    assert result.ok, result.output
