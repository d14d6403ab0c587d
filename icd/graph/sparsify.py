"""Dense affinity matrix → sparse symmetric graph: top-k neighbours per node, symmetrised by max."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def top_k_graph(affinity: np.ndarray, top_k: int | None, block: int | None = None) -> sparse.csr_matrix:
    """Keep, per node, its ``top_k`` strongest neighbours, then symmetrise: ``W = max(W, Wᵀ)``.

    Args:
        affinity: n × n, symmetric, non-negative (the diagonal is ignored).
        top_k: neighbours kept per node (before symmetrising); ``None`` keeps all.
        block: if set, only edges within each contiguous block of this size are kept (block-diagonal graph).

    Returns:
        CSR float64, symmetric, non-negative, zero (absent) diagonal, explicit zeros removed.

    Raises:
        ValueError: non-square affinity, ``top_k < 1``, or a block size that does not divide n.
    """
    dense = np.array(affinity, dtype=np.float64)
    if dense.ndim != 2 or dense.shape[0] != dense.shape[1]:
        raise ValueError(f"affinity must be square, got shape {dense.shape}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    n = dense.shape[0]
    dense = np.nan_to_num(np.abs(dense), nan=0.0, posinf=0.0)
    np.fill_diagonal(dense, 0.0)
    if block:
        if n % block:
            raise ValueError(f"block {block} does not divide size {n}")
        groups = np.arange(n) // block
        dense[groups[:, None] != groups[None, :]] = 0.0
    neighbours = n - 1 if block is None else block - 1
    if top_k is not None and top_k < neighbours:
        # the k largest of each row (ties broken by index, deterministically)
        order = np.argsort(-dense, axis=1, kind="stable")[:, :top_k]
        mask = np.zeros_like(dense, dtype=bool)
        np.put_along_axis(mask, order, True, axis=1)
        dense = np.where(mask, dense, 0.0)
    dense = np.maximum(dense, dense.T)
    graph = sparse.csr_matrix(dense)
    graph.eliminate_zeros()
    graph.sort_indices()
    return graph


def graph_to_arrays(graph: sparse.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    """Named arrays ``{prefix}/data|indices|indptr|shape`` (for correlation_matrix.npz)."""
    csr = sparse.csr_matrix(graph)
    return {
        f"{prefix}/data": csr.data,
        f"{prefix}/indices": csr.indices.astype(np.int64),
        f"{prefix}/indptr": csr.indptr.astype(np.int64),
        f"{prefix}/shape": np.asarray(csr.shape, dtype=np.int64),
    }


def graph_from_arrays(arrays, prefix: str) -> sparse.csr_matrix:
    """Inverse of :func:`graph_to_arrays`."""
    shape = tuple(int(v) for v in arrays[f"{prefix}/shape"])
    return sparse.csr_matrix(
        (arrays[f"{prefix}/data"], arrays[f"{prefix}/indices"], arrays[f"{prefix}/indptr"]), shape=shape
    )
