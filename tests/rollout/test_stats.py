from __future__ import annotations

import numpy as np
import pytest

from icd.rollout.stats import Verdict, compare_error_rates, compare_throughput_share


def test_error_rate_five_percent_vs_zero_is_worse():
    cmp = compare_error_rates(0, 1000, 50, 1000)
    assert cmp.verdict is Verdict.WORSE and cmp.p_value < 1e-6
    assert compare_error_rates(0, 0, 1, 10) is None
    with pytest.raises(ValueError, match="errors_a"):
        compare_error_rates(5, 4, 0, 10)


def test_throughput_share_detects_missing_successes():
    assert compare_throughput_share(500, 500, 50, 50).verdict is Verdict.NO_SIGNIFICANT_DIFFERENCE
    assert compare_throughput_share(500, 400, 50, 50).verdict is Verdict.WORSE


def test_identical_error_rates_give_no_difference_in_95_percent_of_seeded_runs():
    rng = np.random.default_rng(0)
    same = sum(compare_error_rates(rng.binomial(300, 0.02), 300, rng.binomial(300, 0.02), 300).verdict
               is Verdict.NO_SIGNIFICANT_DIFFERENCE for _ in range(100))
    assert same >= 95
