"""Canary judged by PromQL on a real Prometheus scraping the router exporter and Triton (synthetic echo_delay)."""

from __future__ import annotations

import time

import httpx
import pytest

from icd.rollout.canary_spec import CanarySpec
from icd.rollout.decision_log import DecisionLog
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.phase import RolloutPhase
from icd.rollout.providers import NoValuesFound, PrometheusProvider
from icd.rollout.router_exporter import RouterExporter
from icd.rollout.router_ops import ManagedRouter
from icd.rollout.scheduler import RolloutScheduler
from icd.rollout.status_store import DECISIONS_FILE
from icd.load.routed import BackgroundRouted, RoutedSpec
from tests.fixtures.prometheus import wait_until

pytestmark = pytest.mark.e2e
PAYLOADS = synthetic_payloads(16, seq_len=16)
INTERVAL_S = 4.0


def test_promql_canary_rolls_back_slow_canary_and_variants_are_visible(
        echo_triton, nginx_router, prometheus_server, free_port, tmp_path):
    router = nginx_router({"bert_baseline": 100, "bert_icd_slow": 0}, {"blue": [f"127.0.0.1:{echo_triton.http_port}"]})
    exporter_port = free_port()
    with RouterExporter(router.access_log, exporter_port):
        prom = prometheus_server([f"127.0.0.1:{exporter_port}", f"127.0.0.1:{echo_triton.metrics_port}"])
        provider = PrometheusProvider(prom.url)
        spec = CanarySpec.progressive("bert_baseline", "bert_icd_slow", alert_threshold=5.0, interval_s=INTERVAL_S,
                                      threshold=2, step_weight=30, max_weight=60)
        with pytest.raises(NoValuesFound):  # no traffic yet: "no data", not a failure
            provider.run_query(spec.metrics[0].render("bert_icd_slow", "bert_baseline", INTERVAL_S))
        scheduler = RolloutScheduler(ManagedRouter(router), provider, tmp_path)
        scheduler.begin(spec)
        traffic = RoutedSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % 16], concurrency=4,
                              duration_s=120)
        with BackgroundRouted(traffic) as load:
            status = scheduler.tick()
            for _ in range(8):
                time.sleep(INTERVAL_S)
                status = scheduler.tick()
                if status.phase.is_terminal:
                    break
            counts = wait_until(lambda: {s["metric"]["variant"]: float(s["value"][1]) for s in httpx.get(
                f"{prom.url}/api/v1/query", params={"query": "sum by (variant) (icd_router_requests_total)"}
            ).json()["data"]["result"]}, 10, what="router counters in Prometheus")
            triton = httpx.get(f"{prom.url}/api/v1/query", params={
                "query": 'sum by (model) (nv_inference_request_success{model=~"bert_baseline|bert_icd_slow"})'}).json()
        records = load.stop()
    decisions = DecisionLog(tmp_path / DECISIONS_FILE).read()
    assert status.phase is RolloutPhase.FAILED, [(d.action.value, d.reason, d.analysis) for d in decisions]
    p95_checks = [c for d in decisions if d.analysis for c in d.analysis["checks"] if c["name"] == "p95-latency-increase"]
    assert any(c["verdict"] == "fail" and c["value"] > 100 for c in p95_checks)
    assert "histogram_quantile" in p95_checks[-1]["how"]  # the evidence names the PromQL it ran
    assert counts.get("bert_baseline", 0) > 0 and counts.get("bert_icd_slow", 0) > 0
    assert {r["metric"]["model"] for r in triton["data"]["result"]} == {"bert_baseline", "bert_icd_slow"}
    assert [r for r in records if not r.ok] == []
