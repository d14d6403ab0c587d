"""Stage 3, solve (and stage 6's constrained re-solve): one permutation per permutable dimension.

Objective per dimension (docs/pipeline.md):

* **transform** — when an N:M sparsity transform will prune the Linears that *read* this dimension (their
  input columns), the permutation maximises the importance an N:M mask keeps, summed over those Linears
  (Wanda-style scores ``|W_ij| · rms(x_j)`` from the calibration statistics), with
  :func:`icd.solver.search_nm_permutation`;
* **locality** — otherwise, the locality cost ``J(π) = Σ_ij w_ij (pos(i) − pos(j))²`` on the dimension's
  correlation graph, with :func:`icd.solver.solve_locality`.

Within-head dims (``qk``, ``vo``) only move channels inside their head block; a re-solve after N:M sparsity also
keeps whole groups of ``m`` channels together, so the pruned pattern stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import sparse

from icd.calibrate.stats import CalibrationStats
from icd.model.layout import Dim, DimKind, input_readers
from icd.pipeline.context import RunContext
from icd.pipeline.events import StageEvent
from icd.solver import Constraint, locality_cost, search_nm_permutation, solve_locality
from icd.transforms.configs import NMSparsityConfig
from icd.transforms.nm_sparsity import select_linears


@dataclass
class DimSolution:
    """The permutation chosen for one dimension, and what it achieved."""

    dim: Dim
    perm: np.ndarray
    objective: str
    cost_before: float
    cost_after: float
    seconds: float
    solver: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.dim.name, "objective": self.objective, "cost_before": self.cost_before,
                "cost_after": self.cost_after, "seconds": round(self.seconds, 4), **self.solver}


def _nm_config(ctx: RunContext) -> NMSparsityConfig | None:
    return next((t for t in ctx.cfg.transforms if isinstance(t, NMSparsityConfig)), None)


def _nm_readers(encoder, dim: Dim, nm: NMSparsityConfig) -> list[str]:
    """Linears reading ``dim`` whose columns the N:M transform prunes (heads/qk moves never change N:M groups)."""
    if dim.kind in (DimKind.HEADS, DimKind.QK):
        return []
    in_scope = set(select_linears(encoder, nm.scope))
    return [name for name in input_readers(encoder, dim.name) if name in in_scope]


def _importance(encoder, stats: CalibrationStats, name: str) -> np.ndarray:
    weight = encoder.bert.get_submodule(name).weight.detach().to(torch.float64).abs().numpy()
    channel = stats.inputs[name]
    rms = np.sqrt(channel.sq_sum / max(channel.count, 1))
    return weight * rms[None, :]


def _constraint(dim: Dim, group: int | None) -> Constraint | None:
    if dim.block is None and group is None:
        return None
    return Constraint(block=dim.block, group=group)


def _readers_for(ctx: RunContext, encoder, dim: Dim, group: int | None) -> list[str]:
    nm = _nm_config(ctx)
    if nm is None or group is not None or ctx.cfg.solver.objective != "transform":
        return []
    return _nm_readers(encoder, dim, nm)


def time_budgets(ctx: RunContext, encoder, groups: dict[str, int]) -> dict[str, float]:
    """Split ``solver.time_limit_s``: N:M searches get time in proportion to the weights they score (the hidden
    dim stacks every Q, K, V, W1 of the model); locality solves, which are fast, share a tenth."""
    limit = ctx.cfg.solver.time_limit_s
    weights = {}
    for dim in ctx.dims:
        readers = _readers_for(ctx, encoder, dim, groups.get(dim.name))
        weights[dim.name] = sum(encoder.bert.get_submodule(r).weight.numel() for r in readers)
    total = sum(weights.values())
    locality_dims = max(sum(1 for w in weights.values() if w == 0), 1)
    share = 0.9 if total else 0.0
    return {name: (limit * share * w / total if w else limit * (1 - share) / locality_dims) for name, w in weights.items()}


def solve_dim(
    ctx: RunContext, encoder, stats: CalibrationStats, graph: sparse.csr_matrix, dim: Dim, time_limit_s: float,
    group: int | None = None,
) -> DimSolution:
    """Solve one dimension; ``group`` (the N:M ``m``) restricts moves to whole groups (re-solve after pruning)."""
    solver = ctx.cfg.solver
    nm = _nm_config(ctx)
    readers = _readers_for(ctx, encoder, dim, group)
    constraint = _constraint(dim, group)
    identity = np.arange(dim.size)
    if solver.method == "identity":
        cost = locality_cost(graph, identity)
        return DimSolution(dim, identity, "none", cost, cost, 0.0, {"method": "identity"})
    if readers:
        scores = [_importance(encoder, stats, name) for name in readers]
        result = search_nm_permutation(scores, n=nm.n, m=nm.m, time_limit_s=max(time_limit_s, 0.5),
                                       seed=solver.seed, constraint=constraint)
        return DimSolution(
            dim, result.perm, "nm_kept_importance", result.kept_plain, result.kept_permuted, result.seconds,
            {"method": "nm_search", "efficacy": result.efficacy, "kept_upper": result.kept_upper, "readers": readers,
             "locality_before": locality_cost(graph, identity), "locality_after": locality_cost(graph, result.perm)},
        )
    result = solve_locality(graph, method=solver.method, refine=solver.refine, seed=solver.seed,
                            time_limit_s=max(time_limit_s, 0.05), constraint=constraint)
    return DimSolution(dim, result.perm, "locality", result.cost_before, result.cost_after, result.seconds,
                       {"method": result.method})


def run_solve(
    ctx: RunContext, encoder, stats: CalibrationStats, graphs: dict[str, sparse.csr_matrix], event: StageEvent,
    group_for: dict[str, int] | None = None,
) -> dict[str, DimSolution]:
    """Solve every dimension of ``ctx.dims`` (``group_for``: dim name → whole-group size for re-solves)."""
    groups = group_for or {}
    budgets = time_budgets(ctx, encoder, groups)
    solutions: dict[str, DimSolution] = {}
    for dim in ctx.progress_iter(ctx.dims, "solve"):
        solutions[dim.name] = solve_dim(ctx, encoder, stats, graphs[dim.name], dim, budgets[dim.name],
                                        groups.get(dim.name))
    event.numbers.update(summarise(solutions))
    return solutions


def summarise(solutions: dict[str, DimSolution]) -> dict[str, Any]:
    """Totals per objective, for events and the report."""
    out: dict[str, Any] = {"dims": len(solutions)}
    for objective in sorted({s.objective for s in solutions.values()}):
        chosen = [s for s in solutions.values() if s.objective == objective]
        out[f"{objective}_before"] = float(sum(s.cost_before for s in chosen))
        out[f"{objective}_after"] = float(sum(s.cost_after for s in chosen))
    efficacies = [s.solver["efficacy"] for s in solutions.values() if "efficacy" in s.solver]
    if efficacies:
        out["nm_efficacy_mean"] = float(np.mean(efficacies))
    return out
