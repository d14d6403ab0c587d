"""``build_graphs``: one sparse symmetric non-negative graph per permutable dimension."""

from __future__ import annotations

from collections.abc import Sequence

from scipy import sparse

from icd.calibrate.stats import CalibrationStats
from icd.graph.affinity import dim_affinity
from icd.graph.sparsify import top_k_graph
from icd.model.layout import Dim


def build_graph(stats: CalibrationStats, dim: Dim, top_k: int | None) -> sparse.csr_matrix:
    """The graph of one dim: its affinity (docs/graph.md), top-k per node, symmetrised, block-diagonal when
    ``dim.block`` is set. Raises ValueError naming the dim when its statistics are missing or the size differs."""
    affinity = dim_affinity(stats, dim)
    if affinity.shape != (dim.size, dim.size):
        raise ValueError(f"dim {dim.name!r}: statistics give a {affinity.shape[0]}-node graph, the dim has {dim.size}")
    return top_k_graph(affinity, top_k, block=dim.block)


def build_graphs(
    stats: CalibrationStats, dims: Sequence[Dim], top_k: int | None
) -> dict[str, sparse.csr_matrix]:
    """``{dim.name: W}`` for every dim in ``dims`` (same order). W is CSR float64, symmetric, non-negative,
    with zero diagonal; weights are in [0, 1]."""
    return {dim.name: build_graph(stats, dim, top_k) for dim in dims}
