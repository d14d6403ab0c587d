"""A/B statistics: the verdict vocabulary and the proportion tests (error rates, throughput share).

Latency is compared within time blocks by :mod:`icd.rollout.blocked`.

Every comparison is *B relative to A* (A = the reference, e.g. ``bert_baseline``; B = the challenger). A verdict
is BETTER/WORSE only when the difference is statistically significant at ``alpha`` *and* at least
``min_relative_effect`` of A's value (practical significance); otherwise NO_SIGNIFICANT_DIFFERENCE.

Example:
    cmp = compare_error_rates(errors_a=0, n_a=1000, errors_b=50, n_b=1000)
    print(cmp.verdict, cmp.p_value)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from scipy import stats as sps

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_RELATIVE_EFFECT = 0.05


class Verdict(str, Enum):
    """Outcome of one A/B metric comparison, from B's point of view."""

    BETTER = "better"
    """B is significantly and materially better than A."""
    WORSE = "worse"
    """B is significantly and materially worse than A."""
    NO_SIGNIFICANT_DIFFERENCE = "no significant difference"
    """No difference that is both statistically significant and at least the minimum relative effect."""
    INCONCLUSIVE = "inconclusive"
    """The data cannot decide: too little traffic for the test, or the time blocks disagree (the host moved)."""
    NOT_MEASURED = "not measured"
    """Nothing to compare (no samples of one side)."""


def _verdict(significant: bool, delta: float, reference: float, lower_is_better: bool, min_rel: float) -> Verdict:
    material = abs(delta) >= min_rel * abs(reference) if reference else delta != 0
    if not (significant and material):
        return Verdict.NO_SIGNIFICANT_DIFFERENCE
    b_is_higher = delta > 0
    return Verdict.WORSE if b_is_higher == lower_is_better else Verdict.BETTER


@dataclass(frozen=True)
class ProportionComparison:
    """Fisher's exact test of two proportions (e.g. error rates), B − A."""

    events_a: int
    n_a: int
    events_b: int
    n_b: int
    rate_a: float
    rate_b: float
    diff: float
    p_value: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


def compare_error_rates(
    errors_a: int, n_a: int, errors_b: int, n_b: int, alpha: float = DEFAULT_ALPHA
) -> ProportionComparison | None:
    """Fisher's exact test on the 2×2 table of errors/successes (lower error rate is better)."""
    if n_a <= 0 or n_b <= 0:
        return None
    if not (0 <= errors_a <= n_a and 0 <= errors_b <= n_b):
        raise ValueError(f"errors must be within [0, n]: errors_a={errors_a} n_a={n_a} errors_b={errors_b} n_b={n_b}")
    _, p = sps.fisher_exact([[errors_b, n_b - errors_b], [errors_a, n_a - errors_a]])
    ra, rb = errors_a / n_a, errors_b / n_b
    verdict = _verdict(p < alpha, rb - ra, 0.0, True, 0.0)
    return ProportionComparison(errors_a, n_a, errors_b, n_b, ra, rb, rb - ra, float(p), verdict)


def compare_throughput_share(
    count_a: int, count_b: int, weight_a: float, weight_b: float, alpha: float = DEFAULT_ALPHA
) -> ProportionComparison | None:
    """Binomial test of B's share of *successful* requests against its configured traffic share.

    Higher is better: a B that serves fewer successful requests than its weight promises is WORSE.
    """
    n = count_a + count_b
    if n <= 0 or weight_a + weight_b <= 0:
        return None
    expected = weight_b / (weight_a + weight_b)
    if expected in (0.0, 1.0):
        return None
    p = float(sps.binomtest(count_b, n, expected).pvalue)
    share = count_b / n
    verdict = _verdict(p < alpha, share - expected, expected, False, DEFAULT_MIN_RELATIVE_EFFECT)
    return ProportionComparison(count_a, n, count_b, n, expected, share, share - expected, p, verdict)
