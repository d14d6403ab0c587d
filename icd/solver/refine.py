"""Local refinement of a channel ordering under a :class:`~icd.solver.constraint.Constraint`.

Moves (each evaluated exactly on the locality cost, applied only when it lowers it):

* **window move** — a unit (a channel, or a whole group under ``whole_groups``) is moved up to ``window`` unit
  slots left or right inside its block, the units in between shifting by one slot (an adjacent swap is the
  window-1 case);
* **in-unit swap** — under ``whole_groups``, two adjacent channels inside one unit trade places.

The exact change of ``J = Σ_{i<j} s_ij (pos(i) − pos(j))²`` for a set ``M`` of moved channels only involves
the edges touching ``M``, read from the symmetric CSR graph. Passes repeat until no move improves or the time is
up; with enough time the result is deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from icd.solver.constraint import Constraint
from icd.solver.locality import positions
from icd.solver.refine_kernels import in_unit_pass, window_pass

DEFAULT_WINDOW = 6  # unit slots a window move may travel


@dataclass
class RefineStats:
    """What a refinement did."""

    passes: int = 0
    moves: int = 0
    timed_out: bool = False


class LocalRefiner:
    """Holds an ordering and applies improving local moves to it (passes run compiled, see refine_kernels)."""

    def __init__(self, sym: sp.csr_matrix, perm: np.ndarray, constraint: Constraint) -> None:
        self.indptr = sym.indptr.astype(np.int64)
        self.indices = sym.indices.astype(np.int64)
        self.data = sym.data.astype(np.float64)
        self.size = sym.shape[0]
        self.perm = np.array(perm, dtype=np.int64)
        self.pos = positions(self.perm)
        self.unit = constraint.unit_size()
        self.block = constraint.block_size(self.size)
        total = float(self.data.sum()) if self.data.size else 0.0
        self.eps = 1e-12 * max(total * self.size * self.size, 1e-300)

    def refine(self, deadline: float, window: int = DEFAULT_WINDOW) -> RefineStats:
        """Improve until a local optimum (no improving move) or ``deadline`` (``time.perf_counter``)."""
        stats = RefineStats()
        while True:
            if time.perf_counter() >= deadline:
                stats.timed_out = True
                return stats
            stats.passes += 1
            moves = window_pass(self.indptr, self.indices, self.data, self.perm, self.pos, self.unit, self.block,
                                window, self.eps)
            if self.unit > 1:
                moves += in_unit_pass(self.indptr, self.indices, self.data, self.perm, self.pos, self.unit,
                                      self.eps)
            stats.moves += moves
            if moves == 0:
                return stats


def refine_order(sym: sp.csr_matrix, perm: np.ndarray, constraint: Constraint, deadline: float,
                 window: int = DEFAULT_WINDOW) -> tuple[np.ndarray, RefineStats]:
    """Locally refined copy of ``perm`` (which must already respect ``constraint``)."""
    refiner = LocalRefiner(sym, perm, constraint)
    stats = refiner.refine(deadline, window)
    return refiner.perm.copy(), stats
