"""A/B latency comparison that holds on a noisy host: compare within time blocks, judge across them.

Requests are assigned to A or B at random, one by one (the router's ``split_clients`` over ``$request_id``), so
within a short time block both variants see the same host. The run is cut into blocks of ``block_s`` seconds and:

* **within blocks** — the van Elteren test (Mann–Whitney rank sums computed per block, each block weighted
  ``1/(n+1)``, summed): a host that drifts between blocks does not move it;
* **across blocks** — the per-block Hodges–Lehmann shift of B against A, relative to the block's median of A;
  its median over blocks is the estimate, and a *block bootstrap* (blocks resampled with replacement) gives its
  confidence interval. A block keeps its requests together, so autocorrelation inside a block (a stall that
  slows every request of one process for a second) widens the interval instead of faking precision;
* **p95** — the block bootstrap of ``p95(B) / p95(A) − 1`` over the same resampled blocks.

Verdict (B relative to A): *better* / *worse* when both the within-block test (p < α) and the between-block
interval (excludes 0) agree and the shift is at least ``min_relative_effect``; *no significant difference* when
neither finds one or the interval lies inside ±``min_relative_effect``; *inconclusive* when they disagree — the
ranks say "different" but the blocks do not repeat it (or the reverse): the host, not the model, moved. Too few
blocks with enough requests of each variant is also *inconclusive* ("too little traffic"), never a verdict.

Example:
    cmp = compare_latency_blocked(t, latency_ms, is_b, block_s=2.0)
    print(cmp.verdict, cmp.shift_rel, cmp.shift_rel_ci, cmp.reason)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from icd.rollout.stats import DEFAULT_ALPHA, DEFAULT_MIN_RELATIVE_EFFECT, Verdict

DEFAULT_BLOCK_S = 2.0
"""Block length when the duration does not call for longer ones (see :func:`block_length`)."""
TARGET_BLOCKS = 30
"""A long run is cut into about this many blocks."""
MIN_BLOCKS = 6
"""Fewer usable blocks than this: "inconclusive (too little traffic)"."""
MIN_PER_BLOCK = 5
"""A block is usable when it holds at least this many successful requests of each variant."""
MIN_FOR_P95 = 100
"""Successful requests per variant below which p95 is not compared."""
DEFAULT_BLOCK_RESAMPLES = 2000


def block_length(duration_s: float) -> float:
    """Block length for a run of ``duration_s``: :data:`DEFAULT_BLOCK_S`, or longer to keep ~30 blocks."""
    return max(DEFAULT_BLOCK_S, duration_s / TARGET_BLOCKS)


@dataclass(frozen=True)
class Block:
    """The successful latencies of A and B in one time block."""

    index: int
    start: float
    a: np.ndarray
    b: np.ndarray

    def usable(self, min_per_block: int) -> bool:
        return self.a.size >= min_per_block and self.b.size >= min_per_block


def make_blocks(times: np.ndarray, latencies: np.ndarray, is_b: np.ndarray, block_s: float,
                origin: float | None = None) -> list[Block]:
    """Cut the requests into blocks of ``block_s`` seconds by send time (empty blocks are left out)."""
    if block_s <= 0:
        raise ValueError(f"block_s must be > 0, got {block_s}")
    t = np.asarray(times, dtype=float)
    lat = np.asarray(latencies, dtype=float)
    b_mask = np.asarray(is_b, dtype=bool)
    if t.size == 0:
        return []
    t0 = float(t.min()) if origin is None else origin
    idx = np.floor((t - t0) / block_s).astype(int)
    blocks = []
    for i in np.unique(idx):
        sel = idx == i
        blocks.append(Block(int(i), t0 + i * block_s, lat[sel & ~b_mask], lat[sel & b_mask]))
    return blocks


def van_elteren(blocks: list[Block]) -> tuple[float, float]:
    """Stratified Wilcoxon rank-sum (van Elteren) over ``blocks``: ``(z, two-sided p)``, B relative to A.

    Each block's rank sum of B is centred and weighted by ``1/(n_block + 1)``; ties get mid-ranks and the
    variance its tie correction. A positive ``z`` means B ranks slower.
    """
    num, var = 0.0, 0.0
    for block in blocks:
        na, nb = block.a.size, block.b.size
        n = na + nb
        if na == 0 or nb == 0:
            continue
        pooled = np.concatenate([block.a, block.b])
        ranks = sps.rankdata(pooled)
        w = 1.0 / (n + 1)
        rank_sum_b = float(ranks[na:].sum())
        _, counts = np.unique(pooled, return_counts=True)
        ties = float(np.sum(counts.astype(float) ** 3 - counts))
        v = na * nb * (n + 1) / 12.0 - (na * nb * ties / (12.0 * n * (n - 1)) if n > 1 else 0.0)
        num += w * (rank_sum_b - nb * (n + 1) / 2.0)
        var += w * w * v
    if var <= 0:
        return 0.0, 1.0
    z = num / math.sqrt(var)
    return z, float(2 * sps.norm.sf(abs(z)))


def hl_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Hodges–Lehmann shift B − A: the median of all pairwise differences."""
    return float(np.median(np.subtract.outer(b, a)))


@dataclass(frozen=True)
class BlockedLatencyComparison:
    """Blocked comparison of B's latencies against A's, with its evidence."""

    n_a: int
    n_b: int
    block_s: float
    blocks: int
    blocks_used: int
    median_a: float
    median_b: float
    z: float
    p_value: float
    shift_rel: float
    """Median over blocks of (per-block HL shift / per-block median of A): +0.10 = B 10 % slower."""
    shift_rel_ci: tuple[float, float]
    shift_ms: float
    """Median over blocks of the per-block HL shift, in ms."""
    blocks_b_slower: float
    """Fraction of usable blocks in which B's shift is positive."""
    p95_a: float | None
    p95_b: float | None
    p95_rel: float | None
    p95_rel_ci: tuple[float, float] | None
    confidence: float
    resamples: int
    verdict: Verdict
    p95_verdict: Verdict
    reason: str
    p95_reason: str
    per_block: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"], out["p95_verdict"] = self.verdict.value, self.p95_verdict.value
        out["shift_rel_ci"] = list(self.shift_rel_ci)
        out["p95_rel_ci"] = list(self.p95_rel_ci) if self.p95_rel_ci else None
        return out


def _judge(within: bool, est: float, ci: tuple[float, float], min_rel: float, p: float) -> tuple[Verdict, str]:
    between = ci[0] > 0 or ci[1] < 0
    equivalent = -min_rel < ci[0] and ci[1] < min_rel
    span = f"{est:+.1%} [{ci[0]:+.1%}, {ci[1]:+.1%}]"
    if within and between:
        if abs(est) < min_rel:
            return Verdict.NO_SIGNIFICANT_DIFFERENCE, f"shift {span} is significant but below {min_rel:.0%}"
        verdict = Verdict.WORSE if est > 0 else Verdict.BETTER
        return verdict, f"shift {span}, within-block p={p:.2g}: blocks agree"
    if equivalent:
        return Verdict.NO_SIGNIFICANT_DIFFERENCE, f"shift {span} lies within ±{min_rel:.0%}"
    if not within and not between:
        return Verdict.NO_SIGNIFICANT_DIFFERENCE, f"shift {span}, within-block p={p:.2g}"
    if within:
        return Verdict.INCONCLUSIVE, (f"blocks disagree: within-block ranks differ (p={p:.2g}) but the per-block "
                                      f"shifts {span} do not repeat across blocks — the host, not the model, moved")
    return Verdict.INCONCLUSIVE, (f"blocks disagree: the per-block shifts {span} exclude 0 but the within-block "
                                  f"ranks do not (p={p:.2g})")


def _p95_bootstrap(used: list[Block], rng: np.random.Generator, resamples: int) -> np.ndarray:
    k = len(used)
    draws = rng.integers(0, k, size=(resamples, k))
    out = np.empty(resamples)
    for r in range(resamples):
        a = np.concatenate([used[i].a for i in draws[r]])
        b = np.concatenate([used[i].b for i in draws[r]])
        out[r] = np.percentile(b, 95) / np.percentile(a, 95) - 1.0
    return out


def compare_latency_blocked(
    times: np.ndarray | list[float],
    latencies: np.ndarray | list[float],
    is_b: np.ndarray | list[bool],
    block_s: float = DEFAULT_BLOCK_S,
    alpha: float = DEFAULT_ALPHA,
    min_relative_effect: float = DEFAULT_MIN_RELATIVE_EFFECT,
    resamples: int = DEFAULT_BLOCK_RESAMPLES,
    seed: int = 0,
    min_blocks: int = MIN_BLOCKS,
    min_per_block: int = MIN_PER_BLOCK,
) -> BlockedLatencyComparison:
    """Compare the successful latencies of B (``is_b``) against A's, blocked by send time (see module doc)."""
    lat = np.asarray(latencies, dtype=float)
    b_mask = np.asarray(is_b, dtype=bool)
    blocks = make_blocks(np.asarray(times, dtype=float), lat, b_mask, block_s)
    used = [blk for blk in blocks if blk.usable(min_per_block)]
    a_all, b_all = lat[~b_mask], lat[b_mask]
    med_a = float(np.median(a_all)) if a_all.size else float("nan")
    med_b = float(np.median(b_all)) if b_all.size else float("nan")
    common = dict(n_a=int(a_all.size), n_b=int(b_all.size), block_s=block_s, blocks=len(blocks),
                  blocks_used=len(used), median_a=med_a, median_b=med_b, confidence=1 - alpha, resamples=resamples)
    if len(used) < min_blocks:
        reason = (f"too little traffic: {len(used)} blocks of {block_s:g}s hold ≥ {min_per_block} successful requests "
                  f"of each variant (need {min_blocks}); observed {a_all.size} A / {b_all.size} B")
        return BlockedLatencyComparison(
            **common, z=0.0, p_value=1.0, shift_rel=float("nan"), shift_rel_ci=(float("nan"), float("nan")),
            shift_ms=float("nan"), blocks_b_slower=float("nan"), p95_a=None, p95_b=None, p95_rel=None,
            p95_rel_ci=None, verdict=Verdict.INCONCLUSIVE, p95_verdict=Verdict.INCONCLUSIVE, reason=reason,
            p95_reason=reason)
    z, p = van_elteren(used)
    shifts_ms = np.array([hl_shift(blk.a, blk.b) for blk in used])
    ref = np.array([np.median(blk.a) for blk in used])
    rel = np.divide(shifts_ms, ref, out=np.zeros_like(shifts_ms), where=ref > 0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(used), size=(resamples, len(used)))
    boot = np.median(rel[draws], axis=1)
    lo, hi = (float(x) for x in np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    est = float(np.median(rel))
    verdict, reason = _judge(p < alpha, est, (lo, hi), min_relative_effect, p)
    used_a = np.concatenate([blk.a for blk in used])
    used_b = np.concatenate([blk.b for blk in used])
    if min(used_a.size, used_b.size) < MIN_FOR_P95:
        p95_a = p95_b = p95_rel = None
        p95_ci = None
        p95_verdict = Verdict.INCONCLUSIVE
        p95_reason = f"too little traffic for p95: {used_a.size} A / {used_b.size} B (need {MIN_FOR_P95} each)"
    else:
        p95_a, p95_b = float(np.percentile(used_a, 95)), float(np.percentile(used_b, 95))
        p95_rel = p95_b / p95_a - 1.0
        pboot = _p95_bootstrap(used, rng, resamples)
        p95_ci = (float(np.percentile(pboot, 100 * alpha / 2)), float(np.percentile(pboot, 100 * (1 - alpha / 2))))
        between = p95_ci[0] > 0 or p95_ci[1] < 0
        span = f"{p95_rel:+.1%} [{p95_ci[0]:+.1%}, {p95_ci[1]:+.1%}]"
        if between and abs(p95_rel) >= min_relative_effect:
            p95_verdict = Verdict.WORSE if p95_rel > 0 else Verdict.BETTER
        else:
            p95_verdict = Verdict.NO_SIGNIFICANT_DIFFERENCE
        p95_reason = f"p95 ratio {span} (block bootstrap)"
    per_block = [{"start": blk.start, "n_a": int(blk.a.size), "n_b": int(blk.b.size), "shift_rel": float(r)}
                 for blk, r in zip(used, rel, strict=True)]
    return BlockedLatencyComparison(
        **common, z=z, p_value=p, shift_rel=est, shift_rel_ci=(lo, hi), shift_ms=float(np.median(shifts_ms)),
        blocks_b_slower=float(np.mean(rel > 0)), p95_a=p95_a, p95_b=p95_b, p95_rel=p95_rel, p95_rel_ci=p95_ci,
        verdict=verdict, p95_verdict=p95_verdict, reason=reason, p95_reason=p95_reason, per_block=per_block)
