"""Canary fault tests on the real stack: Triton (synthetic echo_delay variants) behind the real nginx router.

Margins are wide on purpose (a +295 ms canary; a 300 % bound for identical variants; 60 req/s and 3 passing
analyses at max weight, so a 5 %-failing canary would need ~4 error-free windows of 27-54 requests to be promoted,
p < 1e-3; no-data ticks only delay the verdict): the outcome must not depend on how loaded the host is. The rollback rate against a 5 %-failing and a
+50 %-slow candidate over many trials is measured by bench/canary_rollback.py."""

from __future__ import annotations

import time

import pytest

from icd.rollout.canary_spec import CanarySpec
from icd.rollout.decision_log import Action, DecisionLog
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.phase import RolloutPhase
from icd.rollout.providers import AccessLogProvider
from icd.rollout.router_ops import ManagedRouter
from icd.rollout.scheduler import RolloutScheduler
from icd.rollout.status_store import DECISIONS_FILE
from icd.load.routed import BackgroundRouted, RoutedSpec

pytestmark = pytest.mark.e2e

THRESHOLD = 2
INTERVAL_S = 1.5
MAX_TICKS = 40
PAYLOADS = synthetic_payloads(64, seq_len=16)


def _rollout(router, tmp_path, canary: str, alert_threshold: float = 50.0) -> tuple[list, object]:
    spec = CanarySpec.progressive("bert_baseline", canary, alert_threshold=alert_threshold, error_rate_diff_pp=1.0,
                                  interval_s=INTERVAL_S, threshold=THRESHOLD, step_weight=30, max_weight=60,
                                  iterations=3, min_samples=15, max_no_data=MAX_TICKS)  # slow host: later verdict
    scheduler = RolloutScheduler(ManagedRouter(router), AccessLogProvider(router.access_log), tmp_path)
    scheduler.begin(spec)
    # Open loop: the canary gets its share of requests however slow it answers (a closed loop would starve it).
    traffic = RoutedSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % len(PAYLOADS)],
                         rate=60, concurrency=32, duration_s=600)
    with BackgroundRouted(traffic) as load:
        status = scheduler.tick()  # START
        for _ in range(MAX_TICKS):
            time.sleep(INTERVAL_S)
            status = scheduler.tick()
            if status.phase.is_terminal:
                break
    records = load.stop()
    return DecisionLog(tmp_path / DECISIONS_FILE).read(), status, records


@pytest.mark.parametrize("canary", ["bert_icd_slow", "bert_icd_flaky"])  # repeated ≥ 20 times: bench/canary_rollback.py
def test_faulty_canary_is_rolled_back_within_threshold_intervals(echo_triton, nginx_router, tmp_path, canary):
    router = nginx_router({"bert_baseline": 100, canary: 0}, {"blue": [f"127.0.0.1:{echo_triton.http_port}"]})
    decisions, status, records = _rollout(router, tmp_path, canary)
    assert status.phase is RolloutPhase.FAILED, [(d.action.value, d.reason, d.analysis) for d in decisions]
    assert status.outcome == "rolled back"
    analyses = [d for d in decisions if d.analysis is not None]
    failed = [d for d in analyses if d.analysis["verdict"] == "fail"]
    assert decisions[-1].action is Action.ROLLBACK
    assert len(failed) == THRESHOLD  # rolled back at exactly `threshold` failed intervals
    assert not [d for d in decisions if d.action is Action.PROMOTE]
    assert router.spec.weights[canary] == 0
    failing = [c for d in analyses for c in d.analysis["checks"] if c["verdict"] == "fail"]
    assert failing and all(c["value"] is not None for c in failing)  # evidence, not guesses
    assert len(records) > 50


def test_healthy_canary_is_promoted(echo_triton, nginx_router, tmp_path):
    router = nginx_router({"bert_baseline": 100, "bert_icd": 0}, {"blue": [f"127.0.0.1:{echo_triton.http_port}"]})
    # Identical variants: p95 within a 1.5 s window of a loaded host can differ 2x; the test is about promotion.
    decisions, status, records = _rollout(router, tmp_path, "bert_icd", alert_threshold=300.0)
    assert status.phase is RolloutPhase.SUCCEEDED, [(d.action.value, d.reason) for d in decisions]
    assert router.spec.weights["bert_icd"] == 100
    assert not [r for r in records if not r.ok]
