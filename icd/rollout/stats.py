"""A/B statistics: latency distributions, tail latency, error rates and throughput with a verdict per metric.

Every comparison is *B relative to A* (A = the reference, e.g. ``bert_baseline``; B = the challenger). A verdict
is BETTER/WORSE only when the difference is statistically significant at ``alpha`` *and* at least
``min_relative_effect`` of A's value (practical significance); otherwise NO_SIGNIFICANT_DIFFERENCE.

Example:
    cmp = compare_latency(lat_a_ms, lat_b_ms)
    print(cmp.verdict, cmp.hl_shift, cmp.hl_ci)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats as sps

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_RELATIVE_EFFECT = 0.05
DEFAULT_BOOTSTRAP_RESAMPLES = 2000
# Hodges–Lehmann uses all n*m pairwise differences; above this many per side a seeded subsample is used.
HL_MAX_PER_SIDE = 2000


class Verdict(str, Enum):
    """Outcome of one A/B metric comparison, from B's point of view."""

    BETTER = "better"
    """B is significantly and materially better than A."""
    WORSE = "worse"
    """B is significantly and materially worse than A."""
    NO_SIGNIFICANT_DIFFERENCE = "no significant difference"
    """No difference that is both statistically significant and at least the minimum relative effect."""
    NOT_MEASURED = "not measured"
    """Too few samples (or none) to compare."""


def _verdict(significant: bool, delta: float, reference: float, lower_is_better: bool, min_rel: float) -> Verdict:
    material = abs(delta) >= min_rel * abs(reference) if reference else delta != 0
    if not (significant and material):
        return Verdict.NO_SIGNIFICANT_DIFFERENCE
    b_is_higher = delta > 0
    return Verdict.WORSE if b_is_higher == lower_is_better else Verdict.BETTER


@dataclass(frozen=True)
class LatencyComparison:
    """Mann–Whitney U test of B vs A latencies with the Hodges–Lehmann shift (B − A) and its CI."""

    n_a: int
    n_b: int
    median_a: float
    median_b: float
    u_statistic: float
    p_value: float
    hl_shift: float
    hl_ci: tuple[float, float]
    confidence: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value, "hl_ci": list(self.hl_ci)}


@dataclass(frozen=True)
class QuantileComparison:
    """Percentile bootstrap CI of the difference of a quantile (B − A)."""

    quantile: float
    value_a: float
    value_b: float
    diff: float
    ci: tuple[float, float]
    confidence: float
    resamples: int
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value, "ci": list(self.ci)}


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


def _subsample(x: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    return x if x.size <= cap else rng.choice(x, size=cap, replace=False)


def hodges_lehmann(a: np.ndarray, b: np.ndarray, confidence: float = 0.95, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Hodges–Lehmann estimate of the shift B − A and its distribution-free CI (Moses / Mann–Whitney inversion).

    The CI takes the k-th smallest and k-th largest of the n·m pairwise differences, with k from the normal
    approximation of U's null distribution. Samples above :data:`HL_MAX_PER_SIDE` are subsampled (seeded).
    """
    rng = np.random.default_rng(seed)
    a_s = _subsample(np.asarray(a, dtype=float), HL_MAX_PER_SIDE, rng)
    b_s = _subsample(np.asarray(b, dtype=float), HL_MAX_PER_SIDE, rng)
    diffs = np.sort((b_s[:, None] - a_s[None, :]).ravel())
    n, m = a_s.size, b_s.size
    z = sps.norm.ppf(0.5 + confidence / 2)
    k = int(math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12)))
    k = max(k, 0)
    return float(np.median(diffs)), (float(diffs[k]), float(diffs[diffs.size - 1 - k]))


def compare_latency(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    alpha: float = DEFAULT_ALPHA,
    min_relative_effect: float = DEFAULT_MIN_RELATIVE_EFFECT,
    seed: int = 0,
) -> LatencyComparison | None:
    """Compare latency samples (lower is better); ``None`` when either side has fewer than 2 samples."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.size < 2 or b_arr.size < 2:
        return None
    res = sps.mannwhitneyu(b_arr, a_arr, alternative="two-sided")
    shift, ci = hodges_lehmann(a_arr, b_arr, confidence=1 - alpha, seed=seed)
    med_a = float(np.median(a_arr))
    significant = res.pvalue < alpha and (ci[0] > 0 or ci[1] < 0)
    return LatencyComparison(
        n_a=int(a_arr.size), n_b=int(b_arr.size), median_a=med_a, median_b=float(np.median(b_arr)),
        u_statistic=float(res.statistic), p_value=float(res.pvalue), hl_shift=shift, hl_ci=ci,
        confidence=1 - alpha, verdict=_verdict(significant, shift, med_a, True, min_relative_effect),
    )


def bootstrap_quantile_diff(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    quantile: float = 95.0,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
    min_relative_effect: float = DEFAULT_MIN_RELATIVE_EFFECT,
    seed: int = 0,
) -> QuantileComparison | None:
    """Percentile-bootstrap CI of ``percentile(B, q) − percentile(A, q)`` (lower is better)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.size < 2 or b_arr.size < 2:
        return None
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(a_arr.size, b_arr.size))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        ra = a_arr[rng.integers(0, a_arr.size, size=(stop - start, a_arr.size))]
        rb = b_arr[rng.integers(0, b_arr.size, size=(stop - start, b_arr.size))]
        diffs[start:stop] = np.percentile(rb, quantile, axis=1) - np.percentile(ra, quantile, axis=1)
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    qa, qb = float(np.percentile(a_arr, quantile)), float(np.percentile(b_arr, quantile))
    significant = lo > 0 or hi < 0
    return QuantileComparison(
        quantile=quantile, value_a=qa, value_b=qb, diff=qb - qa, ci=(float(lo), float(hi)), confidence=1 - alpha,
        resamples=resamples, verdict=_verdict(significant, qb - qa, qa, True, min_relative_effect),
    )


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


def cosine_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally shaped 2-D arrays (rows of zeros give 1.0 if both zero)."""
    x2, y2 = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    if x2.shape != y2.shape:
        raise ValueError(f"shapes differ: {x2.shape} vs {y2.shape}")
    nx, ny = np.linalg.norm(x2, axis=1), np.linalg.norm(y2, axis=1)
    dot = (x2 * y2).sum(axis=1)
    both_zero = (nx == 0) & (ny == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / (nx * ny))
    return np.nan_to_num(cos, nan=0.0)
