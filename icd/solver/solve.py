"""Stage 3 "Solve": one permutation per dimension, minimising a documented cost.

* :func:`solve_locality` — the locality cost ``J(π) = Σ_ij w_ij (pos(i) − pos(j))²`` on a co-access graph:
  a global ordering (spectral, Louvain communities, or identity), projected onto the constraint, then local
  refinement. Used by stage 3 and, with a :class:`Constraint`, by stage 6's constrained re-solve.
* :func:`solve_nm` — the transform's own objective when N:M sparsity is configured: the magnitude the N:M mask
  prunes (cost = Σ scores − kept), via :func:`icd.solver.nm_search.search_nm_permutation`.

Both return a :class:`SolveResult` with the cost before (identity order) and after, and the time taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import scipy.sparse as sp

from icd.solver.community import community_order
from icd.solver.constraint import Constraint
from icd.solver.locality import as_graph, locality_cost, symmetric_weights
from icd.solver.nm_search import DEFAULT_TIME_LIMIT_S, search_nm_permutation
from icd.solver.refine import DEFAULT_WINDOW, refine_order
from icd.solver.spectral import spectral_order


class SolveMethod(str, Enum):
    """Global ordering methods of :func:`solve_locality`."""

    SPECTRAL = "spectral"
    """Fiedler vector of the normalised Laplacian, component by component."""
    LOUVAIN = "louvain"
    """Louvain communities, communities and their members ordered spectrally."""
    IDENTITY = "identity"
    """Keep the current order (refinement only, if enabled)."""


class Objective(str, Enum):
    """What a :class:`SolveResult`'s costs measure (lower is better for both)."""

    LOCALITY = "locality"
    """``Σ_ij w_ij (pos(i) − pos(j))²`` on the dimension's graph."""
    NM_PRUNED = "nm_pruned"
    """Σ of the scores an N:M mask removes (total − kept)."""


@dataclass(frozen=True)
class SolveResult:
    """A permutation and what it costs.

    Attributes:
        perm: ``perm[new] = old`` (int64).
        cost_before: cost of the identity order.
        cost_after: cost of ``perm`` (never above ``cost_before``).
        seconds: wall time.
        method: how it was found (``spectral``, ``louvain``, ``identity``, ``nm_search``).
        objective: the cost's definition (:class:`Objective` value).
        details: extra numbers (refinement moves, N:M efficacy, ...).
    """

    perm: np.ndarray
    cost_before: float
    cost_after: float
    seconds: float
    method: str
    objective: str
    details: dict[str, float | int | bool | str] = field(default_factory=dict)

    @property
    def improvement(self) -> float:
        """Relative cost reduction ``1 − after / before`` (0 when the cost was already 0)."""
        return 0.0 if self.cost_before <= 0 else 1.0 - self.cost_after / self.cost_before

    def summary(self) -> dict[str, float | int | str]:
        """Key numbers for events.jsonl / reports."""
        return {"method": self.method, "objective": self.objective, "size": int(self.perm.size),
                "cost_before": self.cost_before, "cost_after": self.cost_after,
                "improvement": round(self.improvement, 6), "seconds": round(self.seconds, 4), **self.details}


def project_to_constraint(key: np.ndarray, constraint: Constraint) -> np.ndarray:
    """The allowed permutation closest to sorting channels by ``key`` (lower key = earlier position).

    Inside each block, the units (old groups, or single channels) are sorted by their mean key; inside each unit,
    channels are sorted by key.
    """
    size = key.size
    g = constraint.unit_size()
    block = constraint.block_size(size)
    units = np.arange(size).reshape(-1, g)  # old channels of each unit
    unit_key = key[units].mean(axis=1)
    per_block = block // g
    parts = []
    for first in range(0, units.shape[0], per_block):
        idx = np.arange(first, first + per_block)
        for u in idx[np.argsort(unit_key[idx], kind="stable")]:
            members = units[u]
            parts.append(members[np.argsort(key[members], kind="stable")])
    return np.concatenate(parts).astype(np.int64)


def _global_order(sym: sp.csr_matrix, method: SolveMethod, seed: int) -> np.ndarray:
    if method == SolveMethod.SPECTRAL:
        return spectral_order(sym, seed)
    if method == SolveMethod.LOUVAIN:
        return community_order(sym, seed)
    return np.arange(sym.shape[0], dtype=np.int64)


def solve_locality(
    W: sp.spmatrix | sp.sparray | np.ndarray,
    method: str | SolveMethod = SolveMethod.SPECTRAL,
    refine: bool = True,
    seed: int = 0,
    time_limit_s: float = 20.0,
    constraint: Constraint | None = None,
    window: int = DEFAULT_WINDOW,
) -> SolveResult:
    """Order the channels of one dimension to minimise the locality cost on its graph ``W``.

    Args:
        W: square non-negative co-access / correlation graph (scipy sparse or dense); ``W`` and ``Wᵀ`` are both
            counted, the diagonal is ignored.
        method: ``spectral``, ``louvain`` or ``identity`` (the global ordering before refinement).
        refine: run local refinement (window moves, in-unit swaps) after the global ordering.
        seed: seeds ARPACK's start vector and Louvain.
        time_limit_s: cap for the refinement (the global ordering is not interruptible).
        constraint: allowed permutations (``within_blocks`` / ``whole_groups``); ``None`` = any.
        window: unit slots a window move may travel.

    Returns:
        :class:`SolveResult` with ``objective="locality"``; ``cost_after <= cost_before`` (the identity is kept
        when the search finds nothing better).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> chain = sp.diags([np.ones(7), np.ones(7)], [-1, 1])  # path 0-1-...-7
        >>> shuffled = np.random.default_rng(0).permutation(8)
        >>> res = solve_locality(chain.tocsr()[shuffled][:, shuffled])
        >>> res.cost_after  # a path laid out in order: 7 edges × 2 directions × distance 1
        14.0
    """
    start = time.perf_counter()
    method = SolveMethod(method)
    if not time_limit_s > 0:
        raise ValueError(f"time_limit_s: must be > 0, got {time_limit_s!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: must be a positive integer, got {window!r}")
    graph = as_graph(W)
    if graph.nnz and graph.data.min() < 0:
        raise ValueError("W: weights must be non-negative (use |correlation|)")
    constraint = constraint or Constraint()
    size = graph.shape[0]
    constraint.check_size(size)
    sym = symmetric_weights(graph)
    cost_before = locality_cost(graph)
    order = _global_order(sym, method, seed)
    key = np.empty(size)
    key[order] = np.arange(size)
    perm = project_to_constraint(key, constraint)
    details: dict[str, float | int | bool | str] = {"cost_global": locality_cost(graph, perm)}
    if refine:
        perm, stats = refine_order(sym, perm, constraint, start + float(time_limit_s), window)
        details.update({"refine_passes": stats.passes, "refine_moves": stats.moves,
                        "refine_timed_out": stats.timed_out})
    cost_after = locality_cost(graph, perm)
    if cost_after > cost_before:
        perm, cost_after = np.arange(size, dtype=np.int64), cost_before
        details["kept_identity"] = True
    return SolveResult(perm, cost_before, cost_after, time.perf_counter() - start, method.value,
                       Objective.LOCALITY.value, details)


def solve_nm(
    scores: np.ndarray | list[np.ndarray],
    n: int = 2,
    m: int = 4,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    seed: int = 0,
    constraint: Constraint | None = None,
) -> SolveResult:
    """The N:M objective as a :class:`SolveResult`: cost = Σ scores − Σ kept by the N:M mask (pruned mass)."""
    result = search_nm_permutation(scores, n=n, m=m, time_limit_s=time_limit_s, seed=seed, constraint=constraint)
    mats = scores if isinstance(scores, (list, tuple)) else [scores]
    total = float(sum(np.abs(np.asarray(mat, dtype=np.float64)).sum() for mat in mats))
    return SolveResult(result.perm, total - result.kept_plain, total - result.kept_permuted, result.seconds,
                       "nm_search", Objective.NM_PRUNED.value,
                       {"n": n, "m": m, "kept_plain": result.kept_plain, "kept_permuted": result.kept_permuted,
                        "kept_upper": result.kept_upper, "efficacy": round(result.efficacy, 4)})
