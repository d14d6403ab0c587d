"""The blocked A/B latency comparison on generated (synthetic) samples with host-like noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from icd.rollout.blocked import Block, compare_latency_blocked, van_elteren
from icd.rollout.stats import Verdict


def _run(rng, seconds=60, rate=50, base_ms=20.0, shift=0.0, drift=0.0, stalls=0, stall_ms=200.0):
    """Generated traffic: per-request random assignment, a host that drifts and stalls one variant's process.

    ``drift``: the whole host slows by this factor over the run (both variants); ``stalls``: 1-second windows in
    which every request of one (random) variant takes ``stall_ms`` more — scheduler luck, not the model.
    """
    n = seconds * rate
    t = np.sort(rng.uniform(0, seconds, n))
    is_b = rng.random(n) < 0.5
    lat = base_ms * (1 + drift * t / seconds) * rng.lognormal(0, 0.15, n)
    lat[is_b] *= 1 + shift
    for _ in range(stalls):
        start, victim = rng.uniform(0, seconds - 1), rng.random() < 0.5
        hit = (t >= start) & (t < start + 1) & (is_b == victim)
        lat[hit] += stall_ms * rng.random(hit.sum())
    return t, lat, is_b


def test_single_block_van_elteren_is_mann_whitney():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 80), rng.normal(10.5, 1, 70)
    z, p = van_elteren([Block(0, 0.0, a, b)])
    ref = sps.mannwhitneyu(b, a, alternative="two-sided", use_continuity=False, method="asymptotic")
    assert p == pytest.approx(ref.pvalue, rel=1e-9) and z > 0


def test_identical_variants_on_a_drifting_stalling_host_are_never_called_different():
    wrong = 0
    for seed in range(20):
        t, lat, is_b = _run(np.random.default_rng(seed), drift=1.0, stalls=4)
        cmp = compare_latency_blocked(t, lat, is_b, block_s=2.0, resamples=500, seed=seed)
        wrong += cmp.verdict in (Verdict.BETTER, Verdict.WORSE)
    assert wrong <= 1  # ≤ 5 %


def test_a_ten_percent_slower_variant_is_worse_despite_drift_and_stalls():
    detected = 0
    for seed in range(12):
        t, lat, is_b = _run(np.random.default_rng(100 + seed), shift=0.10, drift=1.0, stalls=4)
        cmp = compare_latency_blocked(t, lat, is_b, block_s=2.0, resamples=500, seed=seed)
        detected += cmp.verdict is Verdict.WORSE
        assert cmp.verdict is not Verdict.BETTER
    assert detected >= 11
    assert 0.05 < cmp.shift_rel < 0.15 and cmp.shift_rel_ci[0] > 0


def test_a_shift_that_only_stalls_produce_is_inconclusive_or_no_difference():
    """One variant's process stalled in a few blocks: the ranks differ, the blocks do not repeat it."""
    rng = np.random.default_rng(7)
    t, lat, is_b = _run(rng, seconds=40)
    for start in (3.0, 17.0, 29.0):
        hit = (t >= start) & (t < start + 2) & is_b
        lat[hit] += 400.0
    cmp = compare_latency_blocked(t, lat, is_b, block_s=2.0, resamples=1000)
    assert cmp.verdict in (Verdict.INCONCLUSIVE, Verdict.NO_SIGNIFICANT_DIFFERENCE), cmp.reason
    assert cmp.blocks_b_slower < 0.9


def test_too_little_traffic_is_inconclusive():
    rng = np.random.default_rng(3)
    t, lat, is_b = _run(rng, seconds=4, rate=10, shift=1.0)
    cmp = compare_latency_blocked(t, lat, is_b, block_s=2.0)
    assert cmp.verdict is Verdict.INCONCLUSIVE and "too little traffic" in cmp.reason
    assert cmp.p95_verdict is Verdict.INCONCLUSIVE


def test_p95_shift_is_detected_with_block_bootstrap():
    rng = np.random.default_rng(5)
    t, lat, is_b = _run(rng, shift=0.0)
    slow_tail = is_b & (rng.random(lat.size) < 0.08)
    lat[slow_tail] *= 3.0
    cmp = compare_latency_blocked(t, lat, is_b, block_s=2.0, resamples=500)
    assert cmp.p95_verdict is Verdict.WORSE and cmp.p95_rel > 0.2
