"""A/B through the real router to a real Triton (synthetic echo_delay variants with configured delays).

The two A/Bs run at the same time on one Triton, each through its own router, so each is measured on a host
the other one loads: the blocked design must still call identical variants "no difference" (or say it cannot
tell) and a variant 100 ms slower "worse" — a difference no host noise seen here hides (at load averages near 30
on 2 cores, a +20 ms variant was at times lost in that noise). The sensitivity of the test
(power against +10 %) and its false-positive rate are measured by bench/ab_power.py, not asserted here.
Checked 20 times in a row with two busy-loop processes on the two cores (see
docs/rollout.md, "A/B on a noisy host").
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from icd.errors import UserError
from icd.rollout.ab import ERROR_ROW, LATENCY_ROW, ABSpec, run_ab, write_ab_report
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.stats import Verdict

pytestmark = pytest.mark.e2e

PAYLOADS = synthetic_payloads(32, seq_len=16)


def _ab(router, a: str, b: str):
    spec = ABSpec(a, b, duration_s=12.0, split=(50, 50), rate=30, concurrency=8, block_s=1.0, agreement_n=8,
                  inputs="synthetic")
    return run_ab(router, spec, PAYLOADS)


def test_blocked_ab_holds_for_identical_variants_and_detects_a_slower_one(echo_triton, nginx_router, tmp_path):
    upstream = {"blue": [f"127.0.0.1:{echo_triton.http_port}"]}
    same = nginx_router({"ab_a": 100, "ab_a_twin": 0}, upstream)
    slower = nginx_router({"ab_b": 100, "ab_a_slow": 0}, upstream)
    with ThreadPoolExecutor(2) as pool:
        twin = pool.submit(_ab, same, "ab_a", "ab_a_twin")
        slow = pool.submit(_ab, slower, "ab_b", "ab_a_slow")
        twin, slow = twin.result(), slow.result()
    verdicts = {row["metric"]: row for row in twin.verdicts}
    assert verdicts[LATENCY_ROW]["verdict"] in (Verdict.NO_SIGNIFICANT_DIFFERENCE.value, Verdict.INCONCLUSIVE.value), \
        twin.latency.to_dict()
    assert verdicts[ERROR_ROW]["verdict"] == Verdict.NO_SIGNIFICANT_DIFFERENCE.value
    agreement = twin.agreement.to_dict()
    assert agreement["task"] == "classifier" and agreement["argmax_agreement"] == 1.0  # echo_delay returns logits
    assert agreement["cosine_min"] == pytest.approx(1.0)
    assert same.spec.weights == {"ab_a": 100.0, "ab_a_twin": 0.0}  # restored after the run
    assert slow.latency.verdict is Verdict.WORSE, slow.latency.to_dict()
    assert slow.latency.shift_rel_ci[0] > 0 and slow.latency.blocks_used >= 6
    json_path, html_path = write_ab_report(twin, tmp_path / "ab.json")
    data = json.loads(json_path.read_text())
    assert data["failed_requests"] == 0 and min(data["requests"].values()) > 100
    assert data["comparisons"]["latency_ms"]["block_s"] == 1.0 and "<img" in html_path.read_text()


def test_a_typo_in_a_model_name_is_refused_before_any_traffic(echo_triton, nginx_router):
    router = nginx_router({"ab_a": 100}, {"blue": [f"127.0.0.1:{echo_triton.http_port}"]})
    with pytest.raises(UserError, match=r"'ab_aa' is not READY .* not in the model repository; served there: .*ab_a "
                                        r"READY"):
        run_ab(router, ABSpec("ab_aa", "ab_a_twin", duration_s=5, inputs="synthetic"), PAYLOADS)
    assert router.spec.generation == 0  # the router's routing was never touched
    assert not (router.access_log.exists() and router.access_log.read_text())  # no request went through it
