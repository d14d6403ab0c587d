"""The locality cost of a channel ordering.

``J(perm) = Σ_ij w_ij · (pos(i) − pos(j))²`` over every stored entry ``(i, j)`` of the graph ``W``, where
``pos(i)`` is the new position of old channel ``i``. Convention (everywhere in icd): ``perm[j]`` is the old
channel placed at new position ``j`` (``new = old[perm]``), so ``pos = argsort(perm)``, ``pos[perm[j]] = j``.
Strongly connected channels placed far apart cost much; a symmetric ``W`` counts each pair twice.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def as_graph(W: sp.spmatrix | sp.sparray | np.ndarray, name: str = "W") -> sp.csr_matrix:
    """``W`` as a square float64 CSR matrix; ``ValueError`` for a non-square, non-finite or empty graph."""
    mat = sp.csr_matrix(W, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"{name}: must be a square matrix, got shape {mat.shape}")
    if mat.shape[0] == 0:
        raise ValueError(f"{name}: empty graph")
    if mat.nnz and not np.all(np.isfinite(mat.data)):
        raise ValueError(f"{name}: contains NaN or infinite weights")
    return mat


def symmetric_weights(W: sp.spmatrix | sp.sparray | np.ndarray) -> sp.csr_matrix:
    """``S = W + Wᵀ`` without the diagonal: ``J = Σ_{i<j} s_ij (pos(i) − pos(j))²``."""
    mat = as_graph(W)
    sym = (mat + mat.T).tocsr()
    sym.setdiag(0.0)
    sym.eliminate_zeros()
    sym.sort_indices()
    return sym


def check_perm(perm: np.ndarray | list[int], size: int, name: str = "perm") -> np.ndarray:
    """``perm`` as an int64 array; ``ValueError`` unless it is a permutation of ``range(size)``."""
    arr = np.asarray(perm)
    if arr.ndim != 1 or arr.size != size or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: must be a 1-D integer permutation of range({size}), got shape {arr.shape}")
    if not np.array_equal(np.sort(arr), np.arange(size)):
        raise ValueError(f"{name}: is not a permutation of range({size})")
    return arr.astype(np.int64)


def positions(perm: np.ndarray) -> np.ndarray:
    """``pos[old] = new`` for a permutation ``perm`` (``perm[new] = old``)."""
    pos = np.empty_like(perm)
    pos[perm] = np.arange(perm.size)
    return pos


def locality_cost(W: sp.spmatrix | sp.sparray | np.ndarray, perm: np.ndarray | list[int] | None = None) -> float:
    """``Σ_ij w_ij (pos(i) − pos(j))²`` for the ordering ``perm`` (identity when ``None``).

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> W = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], dtype=float))
        >>> locality_cost(W, [0, 1, 2]), locality_cost(W, [1, 0, 2])  # 2*(1*1 + 2*1), 2*(1*1 + 2*4)
        (6.0, 18.0)
    """
    mat = as_graph(W).tocoo()
    size = mat.shape[0]
    order = np.arange(size) if perm is None else check_perm(perm, size)
    pos = positions(order).astype(np.float64)
    dist = pos[mat.row] - pos[mat.col]
    return float(np.dot(mat.data, dist * dist))
