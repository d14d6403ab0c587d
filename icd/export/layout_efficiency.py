"""``layout_efficiency``: how much of a dimension's channel correlation its layout keeps inside memory blocks.

Definition (docs/serving.md, the ``triton_icd_layout_efficiency`` gauge): for a permutable dimension with a
correlation graph ``C`` (n × n, from correlation_matrix.npz: the run's sparse ``graph/<dim>/...`` arrays, or a
dense matrix) and a permutation ``p`` (new channel ``j`` is old channel ``p[j]``), the *block locality* is

    Σ_{i,j : i//B == j//B, i != j} |C[p_i, p_j]|  /  Σ_{i != j} |C[i, j]|

with ``B`` = :data:`BLOCK` = 32 channels (one 128-byte line of fp32): the share of off-diagonal correlation mass
between channels that the layout puts in the same block. ``layout_efficiency`` is the mean block locality over
the free channel dims (``hidden`` and every ``layer{i}.ffn``) that have both a permutation and a matching graph.
It is computed from the artefacts at export; the baseline (identity layout) gets the same measure with identity
permutations, so the two are comparable.
It is in [0, 1], higher is better; ``None`` when no dimension has both artefacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

BLOCK = 32


def _edges_of_dense(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mat = np.abs(np.asarray(corr, dtype=np.float64))
    rows, cols = np.triu_indices(mat.shape[0], k=1)
    # |C| is taken symmetric: both triangles count (a non-symmetric matrix is averaged).
    return rows, cols, (mat[rows, cols] + mat[cols, rows]) / 2.0


def edge_locality(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, perm: np.ndarray,
                  block: int = BLOCK) -> float:
    """Share of edge weight |w| between channels that ``perm`` puts in the same block of ``block`` channels.

    Edges are pairs of channels in the layout the permutation refers to (new channel ``j`` = old ``perm[j]``).
    """
    weights = np.abs(np.asarray(weights, dtype=np.float64))
    keep = np.asarray(rows) != np.asarray(cols)
    total = weights[keep].sum()
    if total == 0.0:
        return 1.0
    position = np.empty(len(perm), dtype=np.int64)
    position[np.asarray(perm)] = np.arange(len(perm))  # where each old channel sits in the new layout
    same = position[np.asarray(rows)] // block == position[np.asarray(cols)] // block
    return float(weights[keep & same].sum() / total)


def block_locality(corr: np.ndarray, perm: np.ndarray, block: int = BLOCK) -> float:
    """Share of off-diagonal |corr| mass inside blocks of ``block`` consecutive channels after ``perm``."""
    n = np.asarray(corr).shape[0]
    if np.asarray(corr).shape != (n, n) or len(perm) != n:
        raise ValueError(f"correlation {np.asarray(corr).shape} and permutation ({len(perm)}) sizes differ")
    return edge_locality(*_edges_of_dense(corr), perm, block)


def edges_for(dim: str, arrays: Mapping[str, np.ndarray], size: int):
    """``(rows, cols, weights)`` of ``dim`` in a correlation npz, or None.

    Accepted forms: the ``icd.correlation/v1`` sparse graph ``graph/<dim>/{row,col,data,shape}`` (docs/artefacts.md),
    or a dense square matrix under the key ``dim`` (or ``.../dim``, ``dim/...``)."""
    prefix = f"graph/{dim}/"
    if all(prefix + part in arrays for part in ("row", "col", "data", "shape")):
        shape = tuple(int(v) for v in np.asarray(arrays[prefix + "shape"]).ravel())
        if shape == (size, size):
            return arrays[prefix + "row"], arrays[prefix + "col"], arrays[prefix + "data"]
        return None
    for key, value in arrays.items():
        named = key == dim or key.endswith(("/" + dim, ":" + dim)) or key.startswith((dim + "/", dim + ":"))
        if named and value.ndim == 2 and value.shape == (size, size):
            return _edges_of_dense(value)
    return None


def counts_for_efficiency(dim: str) -> bool:
    """Only free channel dims count: ``hidden`` and ``layer{i}.ffn``. ``heads`` (A < 32 entries) and the
    within-head ``qk`` / ``vo`` dims (permuted only inside 32-wide head blocks at MiniLM / BERT-base shapes) would
    score 1.0 whatever the layout."""
    return dim == "hidden" or dim.endswith(".ffn")


def layout_efficiency(
    permutations: Mapping[str, np.ndarray], correlation_path: Path | None, identity: bool = False
) -> tuple[float | None, list[str]]:
    """Mean block locality over the dims with both artefacts (identity layout if ``identity``).

    Returns:
        ``(value or None, names of the dims used)``.
    """
    if correlation_path is None or not permutations:
        return None, []
    with np.load(correlation_path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    scores, used = [], []
    for dim, perm in sorted(permutations.items()):
        if not counts_for_efficiency(dim):
            continue
        edges = edges_for(dim, arrays, len(perm))
        if edges is None:
            continue
        layout = np.arange(len(perm)) if identity else np.asarray(perm)
        scores.append(edge_locality(*edges, layout))
        used.append(dim)
    return (float(np.mean(scores)) if scores else None), used
