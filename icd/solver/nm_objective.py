"""The N:M objective: which entries an N:M mask keeps, and how much importance it keeps.

An N:M pattern keeps, in every row, the ``n`` largest of each group of ``m`` consecutive columns (the input
dimension of a Linear weight). Scores are non-negative importances: ``|W|`` by default, or a Wanda-style
``|W| * ||x||`` chosen by the caller.

* ``kept_plain``   — Σ of what the N:M mask keeps with the columns in their current order;
* ``kept_permuted`` — the same after permuting the columns;
* ``kept_upper``   — Σ of each row's top ``n/m`` fraction (no grouping): no permutation can keep more;
* ``efficacy``     — ``(kept_permuted − kept_plain) / (kept_upper − kept_plain) × 100`` (Pool & Yu, 2021).
"""

from __future__ import annotations

import numpy as np


def check_nm(n: int, m: int) -> None:
    """Validate an N:M pattern (``0 < n < m``); raises ``ValueError`` naming the field."""
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise ValueError(f"m: must be an integer >= 2, got {m!r}")
    if not isinstance(n, (int, np.integer)) or not 0 < n < m:
        raise ValueError(f"n: must be an integer with 0 < n < m={m}, got {n!r}")


def as_scores(matrix: np.ndarray, m: int, name: str = "scores") -> np.ndarray:
    """``|matrix|`` as a float64 2-D array whose column count is a multiple of ``m``; ``ValueError`` otherwise."""
    arr = np.asarray(matrix)
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be 2-D (rows = outputs, cols = inputs), got shape {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[1] % m:
        raise ValueError(f"{name}: column count {arr.shape[1]} is not a positive multiple of m={m}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: must be numeric, got dtype {arr.dtype}")
    out = np.abs(arr.astype(np.float64, copy=False))
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return out


def nm_mask(scores_or_weights: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Boolean keep-mask of the N:M pattern along the columns (input dim) of a 2-D array.

    Args:
        scores_or_weights: ``(rows, cols)`` weights or importances; magnitudes are compared (``|x|``).
        n: entries kept per group.
        m: group size (consecutive columns); ``cols`` must be a multiple of ``m``.

    Returns:
        ``bool`` array of the input's shape, exactly ``n`` True per group of ``m`` in every row (ties broken
        towards the lower column index, deterministically).
    """
    check_nm(n, m)
    scores = as_scores(scores_or_weights, m)
    rows, cols = scores.shape
    grouped = scores.reshape(rows, cols // m, m)
    order = np.argsort(-grouped, axis=2, kind="stable")[..., :n]
    mask = np.zeros_like(grouped, dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(rows, cols)


def kept_nm(scores: np.ndarray, n: int, m: int) -> float:
    """Σ of the scores an N:M mask keeps (columns in their given order)."""
    rows, cols = scores.shape
    grouped = np.sort(scores.reshape(rows, cols // m, m), axis=2)
    return float(grouped[..., m - n:].sum())


def kept_upper_bound(scores: np.ndarray, n: int, m: int) -> float:
    """Σ of each row's top ``cols·n/m`` scores: the most any column permutation could keep."""
    cols = scores.shape[1]
    k = cols * n // m
    top = np.partition(scores, cols - k, axis=1)[:, cols - k:]
    return float(top.sum())


def efficacy_percent(kept_plain: float, kept_permuted: float, kept_upper: float) -> float:
    """``(permuted − plain) / (upper − plain) × 100``; 0 when plain already reaches the bound."""
    room = kept_upper - kept_plain
    if room <= 1e-12 * max(abs(kept_upper), 1.0):
        return 0.0
    return float((kept_permuted - kept_plain) / room * 100.0)
