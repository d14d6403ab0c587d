"""A/B through the real router to a real Triton (synthetic echo_delay variants with configured delays)."""

from __future__ import annotations

import json

import pytest

from icd.rollout.ab import ABSpec, run_ab, write_ab_report
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.stats import Verdict

pytestmark = pytest.mark.e2e

PAYLOADS = synthetic_payloads(32, seq_len=16)


def _ab(echo_triton, nginx_router, a: str, b: str, seconds: float = 6.0):
    router = nginx_router({a: 100, b: 0}, {"blue": [f"127.0.0.1:{echo_triton.http_port}"]})
    spec = ABSpec(a, b, duration_s=seconds, split=(50, 50), concurrency=4, agreement_n=8, inputs="synthetic")
    return router, run_ab(router, spec, PAYLOADS)


def test_identical_variants_show_no_significant_difference(echo_triton, nginx_router, tmp_path):
    router, result = _ab(echo_triton, nginx_router, "ab_a", "ab_a_twin")
    verdicts = {row["metric"]: row["verdict"] for row in result.verdicts}
    assert verdicts["latency (median, Mann-Whitney U)"] == Verdict.NO_SIGNIFICANT_DIFFERENCE.value, result.verdicts
    assert verdicts["error rate (Fisher exact)"] == Verdict.NO_SIGNIFICANT_DIFFERENCE.value
    assert result.agreement["argmax_agreement"] == 1.0 and result.agreement["cosine_min"] == pytest.approx(1.0)
    assert router.spec.weights == {"ab_a": 100.0, "ab_a_twin": 0.0}  # restored after the run
    json_path, html_path = write_ab_report(result, tmp_path / "ab.json")
    data = json.loads(json_path.read_text())
    assert data["failed_requests"] == 0 and min(data["requests"].values()) > 100
    assert "<img" in html_path.read_text()


def test_twenty_percent_slower_variant_is_detected(echo_triton, nginx_router):
    _, result = _ab(echo_triton, nginx_router, "ab_a", "ab_a_slow20")
    lat = result.comparisons["latency_ms"]
    assert lat["verdict"] == Verdict.WORSE.value, result.verdicts
    assert lat["hl_ci"][0] > 0
