"""Stage 3 "Solve": permutations that minimise a documented cost (see docs/solver.md).

Convention: ``perm[new] = old`` (``new = old[perm]``).
"""

from __future__ import annotations

from icd.solver.constraint import Constraint, ConstraintMode, constraint_for_dim
from icd.solver.locality import locality_cost, positions
from icd.solver.nm_objective import efficacy_percent, kept_nm, kept_upper_bound, nm_mask
from icd.solver.nm_search import NMResult, search_nm_permutation
from icd.solver.solve import Objective, SolveMethod, SolveResult, project_to_constraint, solve_locality, solve_nm

__all__ = [
    "Constraint",
    "ConstraintMode",
    "constraint_for_dim",
    "NMResult",
    "Objective",
    "SolveMethod",
    "SolveResult",
    "efficacy_percent",
    "kept_nm",
    "kept_upper_bound",
    "locality_cost",
    "nm_mask",
    "positions",
    "project_to_constraint",
    "search_nm_permutation",
    "solve_locality",
    "solve_nm",
]
