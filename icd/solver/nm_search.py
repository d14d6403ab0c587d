"""Column permutation search for N:M sparsity (in the spirit of Pool & Yu, NeurIPS 2021 / apex).

Goal: permute the input channels (columns) of one or several weight matrices so that an N:M mask along the
columns keeps as much importance as possible. Several matrices given together share ONE permutation of their
columns (the model's shared constraints: the hidden dim is read by Q, K, V and W1 of every layer); since the
objective is a sum over rows, they are searched as one row-stacked matrix.

Algorithm (vectorised numpy, deterministic for a seed):

1. Start from the identity (plain N:M), so the result can never keep less than plain N:M (efficacy ≥ 0).
2. Channel-swap local search with exact deltas. Swapping column ``a`` (group A) with ``b`` (group B) changes only
   A and B. With A's other ``m−1`` entries of row ``r`` sorted, top-n of (others ∪ {x}) equals
   ``topn(others) + max(0, x − t)`` where ``t`` is the n-th largest of the others, so the gain is
   ``base[a] + base[b] + Σ_r relu(w_rb − t_ar) + Σ_r relu(w_ra − t_br)``. The table ``Σ_r relu(w_rb − t_ar)``
   for all column pairs is built once and updated only for the columns a swap touched. Swaps on disjoint group
   pairs are independent, so each round applies a whole greedy matching of improving swaps; each one is
   re-checked exactly in float64 before it is applied.
3. Stripe-pair moves (Pool & Yu's "stripe group" step for two groups): when no single swap improves, the best
   two-column exchanges between the most promising group pairs are evaluated exactly.
4. Perturbation: with time left, random swaps kick the search out of the local optimum; the best state seen is
   kept and returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from icd.solver.constraint import Constraint
from icd.solver.nm_kernels import (
    best_partners,
    pair_partition_gains,
    partitions,
    relu_table,
    update_table,
    warm_up,
)
from icd.defaults import NM_SEARCH_KICKS as DEFAULT_KICKS  # perturbations after the first descent
from icd.defaults import NM_SEARCH_TIME_LIMIT_S as DEFAULT_TIME_LIMIT_S
from icd.solver.nm_objective import as_scores, check_nm, efficacy_percent, kept_nm, kept_upper_bound

_PAIR_MOVE_MAX_M = 4  # C(2m-1, m-1) splits per group pair: 35 for m=4, 462 for m=6
_MIN_PAIR_CANDIDATES = 8  # group pairs re-partitioned exactly per stripe-pair step: max(8, groups / 2)
_KICK_MIN_GROUPS = 3  # groups whose columns one perturbation shuffles together (at least)
_GAIN_TOL = 1e-9  # relative to the mean kept score: gains below this are treated as zero


@dataclass(frozen=True)
class NMResult:
    """Outcome of :func:`search_nm_permutation` (all ``kept_*`` are sums of scores over every matrix).

    Attributes:
        perm: ``perm[j]`` = old column placed at new position ``j`` (int64).
        kept_plain: kept by plain N:M (identity order).
        kept_permuted: kept by N:M after ``perm``.
        kept_upper: per-row top-(n/m) bound.
        efficacy: ``(kept_permuted − kept_plain) / (kept_upper − kept_plain) × 100``.
        seconds: wall time of the search.
    """

    perm: np.ndarray
    kept_plain: float
    kept_permuted: float
    kept_upper: float
    efficacy: float
    seconds: float
    n: int = 2
    m: int = 4
    rows: int = 0
    cols: int = 0
    swaps: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int]:
        """The numbers ``icd permute-nm`` prints."""
        return {
            "rows": self.rows,
            "cols": self.cols,
            "kept_plain": round(self.kept_plain, 6),
            "kept_permuted": round(self.kept_permuted, 6),
            "kept_upper": round(self.kept_upper, 6),
            "efficacy": round(self.efficacy, 3),
            "seconds": round(self.seconds, 3),
        }


class _SwapState:
    """Current permutation plus the tables that make swap gains O(1) to read."""

    def __init__(self, scores: np.ndarray, n: int, m: int, block: int) -> None:
        self.scores = scores
        self.n, self.m = n, m
        rows, cols = scores.shape
        self.cols = cols
        self.perm = np.arange(cols)
        self.w64 = scores.copy()  # permuted scores, rows × cols
        self.group_of = np.arange(cols) // m
        self.block = block
        self.block_of = np.arange(cols) // block
        self.thr64 = np.empty((cols, rows))
        self.base = np.empty(cols)
        self._update_groups(np.arange(cols // m))
        self.wt32 = np.ascontiguousarray(self.w64.T, dtype=np.float32)
        self.thr32 = self.thr64.astype(np.float32)
        self.table = relu_table(self.thr32, self.wt32)
        self.table_t = np.ascontiguousarray(self.table.T)

    def _update_groups(self, groups: np.ndarray) -> None:
        """Recompute thresholds and bases of the columns of ``groups``.

        For column ``j`` of a group, the n-th largest of the *other* m−1 entries of a row is the group's
        (n+1)-th largest when ``j`` is among the kept n, else the group's n-th largest.
        """
        n, m = self.n, self.m
        rows = self.w64.shape[0]
        cols = (groups[:, None] * m + np.arange(m)[None, :]).ravel()
        vals = self.w64[:, cols].reshape(rows, groups.size, m)
        order = np.argsort(vals, axis=2, kind="stable")  # ascending
        ranked = np.take_along_axis(vals, order, axis=2)
        nth = ranked[..., m - n]
        next_down = ranked[..., m - n - 1]
        in_top = np.zeros(vals.shape, dtype=bool)
        np.put_along_axis(in_top, order[..., m - n:], True, axis=2)
        thr = np.where(in_top, next_down[..., None], nth[..., None])  # rows × groups × m
        loss = np.where(in_top, vals - next_down[..., None], 0.0).sum(axis=0)  # groups × m
        self.thr64[cols] = thr.reshape(rows, -1).T
        self.base[cols] = -loss.ravel()

    def kept(self) -> float:
        return kept_nm(self.w64, self.n, self.m)

    def best_partners(self) -> tuple[np.ndarray, np.ndarray]:
        """Each column's best allowed swap partner and its (float32-table) gain."""
        return best_partners(self.table, self.table_t, self.base, self.m, self.block)

    def exact_gain(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact float64 gains of swapping positions ``a[k]`` and ``b[k]`` (different groups)."""
        wa, wb = self.w64[:, a], self.w64[:, b]
        recv_a = np.maximum(wb - self.thr64[a].T, 0.0).sum(axis=0)
        recv_b = np.maximum(wa - self.thr64[b].T, 0.0).sum(axis=0)
        return self.base[a] + self.base[b] + recv_a + recv_b

    def apply(self, a: np.ndarray, b: np.ndarray) -> None:
        """Swap positions ``a[k]`` ↔ ``b[k]`` and refresh the touched tables."""
        self.move(np.concatenate([a, b]), np.concatenate([b, a]))

    def move(self, targets: np.ndarray, sources: np.ndarray) -> None:
        """Position ``targets[k]`` receives the column now at ``sources[k]`` (a permutation of ``targets``)."""
        self.perm[targets] = self.perm[sources].copy()
        self.w64[:, targets] = self.w64[:, sources].copy()
        groups = np.unique(self.group_of[targets])
        self._update_groups(groups)
        self.wt32[targets] = self.w64[:, targets].T
        touched = (groups[:, None] * self.m + np.arange(self.m)[None, :]).ravel()
        self.thr32[touched] = self.thr64[touched]
        update_table(self.table, self.table_t, self.thr32, self.wt32, touched, targets)

    def snapshot(self) -> tuple[np.ndarray, ...]:
        return (self.perm.copy(), self.w64.copy(), self.thr64.copy(), self.base.copy(), self.wt32.copy(),
                self.thr32.copy(), self.table.copy(), self.table_t.copy())

    def restore(self, snap: tuple[np.ndarray, ...]) -> None:
        (self.perm, self.w64, self.thr64, self.base, self.wt32, self.thr32, self.table,
         self.table_t) = (x.copy() for x in snap)


def _greedy_matching(gains: np.ndarray, partners: np.ndarray, group_of: np.ndarray,
                     tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Each column's best improving swap, best first, keeping only swaps whose two groups are still unused."""
    order = np.flatnonzero(gains > tol)
    order = order[np.argsort(-gains[order], kind="stable")]
    used: set[int] = set()
    pick_a: list[int] = []
    pick_b: list[int] = []
    for a, b in zip(order.tolist(), partners[order].tolist()):
        ga, gb = int(group_of[a]), int(group_of[b])
        if ga in used or gb in used:
            continue
        used.update((ga, gb))
        pick_a.append(a)
        pick_b.append(b)
    return np.asarray(pick_a, dtype=np.int64), np.asarray(pick_b, dtype=np.int64)


def _descend(state: _SwapState, deadline: float, tol: float, min_rounds: int = 0) -> int:
    """Apply rounds of improving disjoint swaps until none is left or time runs out (but at least ``min_rounds``
    rounds); returns swaps applied."""
    applied = 0
    rounds = 0
    while rounds < min_rounds or time.perf_counter() < deadline:
        rounds += 1
        gains, partners = state.best_partners()
        a, b = _greedy_matching(gains, partners, state.group_of, tol)
        if a.size == 0:
            break
        exact = state.exact_gain(a, b)
        keep = exact > tol
        if not keep.any():
            break
        state.apply(a[keep], b[keep])
        applied += int(keep.sum())
    return applied


def _pair_moves(state: _SwapState, tol: float, pairs: int) -> int:
    """Best re-partition of the most promising group pairs (stripe-pair step); returns pair moves applied."""
    m = state.m
    if m > _PAIR_MOVE_MAX_M:
        return 0
    gains, partners = state.best_partners()
    valid = partners >= 0
    ga = state.group_of[np.flatnonzero(valid)]
    gb = state.group_of[partners[valid]]
    lo, hi = np.minimum(ga, gb), np.maximum(ga, gb)
    order = np.argsort(-gains[valid], kind="stable")  # most promising first (best single swap, even if < 0)
    key = lo[order] * (state.cols // m) + hi[order]
    _, first = np.unique(key, return_index=True)
    chosen = order[np.sort(first)][:pairs]
    if chosen.size == 0:
        return 0
    ga, gb = lo[chosen], hi[chosen]
    gains, codes = pair_partition_gains(state.w64, ga, gb, m, state.n)
    subsets, _ = partitions(m)
    used: set[int] = set()
    move_a: list[int] = []
    move_b: list[int] = []
    for k in np.argsort(-gains, kind="stable").tolist():
        if gains[k] <= tol:
            break
        if int(ga[k]) in used or int(gb[k]) in used:
            continue
        used.update((int(ga[k]), int(gb[k])))
        split = set(subsets[codes[k]].tolist())  # the 2m columns (A's, then B's) that form the new A
        to_b = [j for j in range(m) if j not in split]  # A's columns leaving for B
        to_a = [j - m for j in sorted(split) if j >= m]  # B's columns coming to A
        move_a.extend(int(ga[k]) * m + j for j in to_b)
        move_b.extend(int(gb[k]) * m + j for j in to_a)
    if move_a:
        state.apply(np.asarray(move_a, dtype=np.int64), np.asarray(move_b, dtype=np.int64))
    return len(used) // 2


def _stack(scores: np.ndarray | list[np.ndarray], m: int) -> np.ndarray:
    mats = scores if isinstance(scores, (list, tuple)) else [scores]
    if not mats:
        raise ValueError("scores: empty list")
    arrays = [as_scores(mat, m, name=f"scores[{i}]") for i, mat in enumerate(mats)]
    widths = {a.shape[1] for a in arrays}
    if len(widths) != 1:
        raise ValueError(f"scores: matrices sharing a permutation must have the same column count, got {sorted(widths)}")
    return arrays[0] if len(arrays) == 1 else np.vstack(arrays)


def _check_constraint(constraint: Constraint | None, cols: int, m: int) -> int:
    """Block size the search may swap within; ``ValueError`` for constraints the N:M search cannot honour."""
    if constraint is None:
        return cols
    constraint.check_size(cols)
    if constraint.group not in (None, 1):
        raise ValueError(
            f"Constraint.group: the N:M search moves single columns; got group={constraint.group} "
            "(use solve_locality for whole-group re-permutation)"
        )
    block = constraint.block_size(cols)
    if block % m:
        raise ValueError(f"Constraint.block: {block} is not a multiple of m={m}")
    return block


def search_nm_permutation(
    scores: np.ndarray | list[np.ndarray],
    n: int = 2,
    m: int = 4,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    seed: int = 0,
    constraint: Constraint | None = None,
    kicks: int = DEFAULT_KICKS,
) -> NMResult:
    """Find a column permutation that maximises what an N:M mask keeps.

    Args:
        scores: non-negative importance matrix ``(rows = outputs, cols = inputs)`` — ``|W|`` or ``|W|·‖x‖`` — or a
            list of such matrices whose columns share one permutation (absolute values are taken).
        n: kept per group.
        m: group size along the columns.
        time_limit_s: wall-time cap. The search stops by itself after ``kicks`` perturbations of its local
            optimum; the result is then deterministic for a seed. If the cap is hit first, the best permutation
            found so far is returned (it then depends on the machine's speed). The first round of swaps always
            completes, even past the cap (one table build and one greedy matching).
        seed: seeds the perturbations.
        constraint: optional ``Constraint(block=B)``: columns move only inside their block of ``B`` (multiple of m).
        kicks: random perturbations of the local optimum, each followed by a new descent (best state kept).

    Returns:
        :class:`NMResult`; ``kept_permuted >= kept_plain`` always.

    Example:
        >>> import numpy as np
        >>> res = search_nm_permutation(np.random.default_rng(0).random((64, 128)), time_limit_s=1.0)
        >>> res.efficacy > 0
        True
    """
    check_nm(n, m)
    if isinstance(kicks, bool) or not isinstance(kicks, (int, np.integer)) or kicks < 0:
        raise ValueError(f"kicks: must be a non-negative integer, got {kicks!r}")
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s: must be > 0, got {time_limit_s!r}")
    warm_up()
    start = time.perf_counter()
    deadline = start + float(time_limit_s)
    stacked = _stack(scores, m)
    rows, cols = stacked.shape
    block = _check_constraint(constraint, cols, m)
    kept_plain = kept_nm(stacked, n, m)
    kept_upper = kept_upper_bound(stacked, n, m)
    tol = _GAIN_TOL * max(kept_plain / max(rows * cols // m * n, 1), 1e-300) * 1.0
    stats = {"swaps": 0, "pair_moves": 0, "kicks": 0}
    if cols // m < 2 or block == m:
        perm = np.arange(cols)
        return NMResult(perm, kept_plain, kept_plain, kept_upper, 0.0, time.perf_counter() - start, n, m, rows, cols,
                        0, stats)
    state = _SwapState(stacked, n, m, block)
    rng = np.random.default_rng(seed)
    best_kept = kept_plain
    best = state.snapshot()
    pair_seconds = 0.0  # duration of the last stripe-pair step: skipped when it would overrun the deadline
    min_rounds = 1  # the first round of swaps always runs, so a starved process still improves on plain N:M
    while min_rounds or time.perf_counter() < deadline:
        stats["swaps"] += _descend(state, deadline, tol, min_rounds)
        min_rounds = 0
        if time.perf_counter() + pair_seconds < deadline:
            began = time.perf_counter()
            moved = _pair_moves(state, tol, pairs=max(_MIN_PAIR_CANDIDATES, cols // m // 2))
            pair_seconds = time.perf_counter() - began
            stats["pair_moves"] += moved
            if moved:
                continue
        kept = state.kept()
        if kept > best_kept + tol:
            best_kept, best = kept, state.snapshot()
        elif kept < best_kept - tol:
            state.restore(best)
        if stats["kicks"] >= kicks or time.perf_counter() >= deadline:
            break
        _kick(state, rng)
        stats["kicks"] += 1
    kept = state.kept()
    if kept > best_kept + tol:
        best_kept, best = kept, state.snapshot()
    perm = best[0]
    kept_permuted = kept_nm(stacked[:, perm], n, m)
    if kept_permuted <= kept_plain:  # nothing better than plain (also absorbs float summation-order noise)
        perm, kept_permuted = np.arange(cols), kept_plain
    seconds = time.perf_counter() - start
    return NMResult(perm, kept_plain, kept_permuted, kept_upper,
                    efficacy_percent(kept_plain, kept_permuted, kept_upper), seconds, n, m, rows, cols,
                    stats["swaps"] + 2 * stats["pair_moves"], stats)


def _kick(state: _SwapState, rng: np.random.Generator) -> None:
    """Shuffle the columns of a few random groups of one random block (a move no pair step can make)."""
    m = state.m
    groups_per_block = int(state.block_of.size // (state.block_of.max() + 1)) // m
    block = int(rng.integers(0, state.block_of.max() + 1))
    count = min(groups_per_block, max(_KICK_MIN_GROUPS, groups_per_block // 16))
    chosen = block * groups_per_block + rng.choice(groups_per_block, size=count, replace=False)
    targets = (np.sort(chosen)[:, None] * m + np.arange(m)[None, :]).ravel()
    state.move(targets, rng.permutation(targets))
