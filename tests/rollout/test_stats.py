from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.rollout.stats import (
    Verdict,
    bootstrap_quantile_diff,
    compare_error_rates,
    compare_latency,
    compare_throughput_share,
    cosine_rows,
    hodges_lehmann,
)


def _latencies(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    # Generated (synthetic) latency samples, log-normal like real service latencies, in ms.
    return scale * rng.lognormal(mean=np.log(20.0), sigma=0.3, size=n)


def test_identical_distributions_give_no_difference_in_95_percent_of_seeded_runs():
    runs, no_diff_latency, no_diff_p95, no_diff_err = 100, 0, 0, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        a, b = _latencies(rng, 300), _latencies(rng, 300)
        no_diff_latency += compare_latency(a, b, seed=seed).verdict is Verdict.NO_SIGNIFICANT_DIFFERENCE
        q = bootstrap_quantile_diff(a, b, resamples=400, seed=seed)
        no_diff_p95 += q.verdict is Verdict.NO_SIGNIFICANT_DIFFERENCE
        ea, eb = rng.binomial(300, 0.02), rng.binomial(300, 0.02)
        no_diff_err += compare_error_rates(ea, 300, eb, 300).verdict is Verdict.NO_SIGNIFICANT_DIFFERENCE
    assert no_diff_latency >= 95
    assert no_diff_p95 >= 95
    assert no_diff_err >= 95


def test_twenty_percent_slower_b_is_worse_and_faster_b_is_better():
    rng = np.random.default_rng(1)
    a = _latencies(rng, 400)
    slow = compare_latency(a, _latencies(rng, 400, scale=1.2))
    assert slow.verdict is Verdict.WORSE
    assert slow.hl_ci[0] > 0 and 0.1 * slow.median_a < slow.hl_shift < 0.35 * slow.median_a
    fast = compare_latency(a, _latencies(rng, 400, scale=0.8))
    assert fast.verdict is Verdict.BETTER
    assert bootstrap_quantile_diff(a, _latencies(rng, 400, scale=1.2), resamples=500).verdict is Verdict.WORSE


def test_hodges_lehmann_of_a_pure_shift_recovers_it():
    a = np.arange(100, dtype=float)
    shift, (lo, hi) = hodges_lehmann(a, a + 7.0)
    assert shift == pytest.approx(7.0)
    assert lo <= 7.0 <= hi


def test_error_rate_five_percent_vs_zero_is_worse():
    cmp = compare_error_rates(0, 1000, 50, 1000)
    assert cmp.verdict is Verdict.WORSE and cmp.p_value < 1e-6
    assert compare_error_rates(0, 0, 1, 10) is None
    with pytest.raises(ValueError, match="errors_a"):
        compare_error_rates(5, 4, 0, 10)


def test_throughput_share_detects_missing_successes():
    assert compare_throughput_share(500, 500, 50, 50).verdict is Verdict.NO_SIGNIFICANT_DIFFERENCE
    assert compare_throughput_share(500, 400, 50, 50).verdict is Verdict.WORSE


def test_too_few_samples_are_not_compared():
    assert compare_latency([1.0], [1.0, 2.0]) is None
    assert bootstrap_quantile_diff([], [1.0, 2.0]) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=12))
def test_cosine_of_a_row_with_itself_is_one(row):
    x = np.array([row])
    if np.linalg.norm(x) > 1e-6:
        assert cosine_rows(x, x)[0] == pytest.approx(1.0)
        assert cosine_rows(x, -x)[0] == pytest.approx(-1.0)
