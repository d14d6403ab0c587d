"""The hot kernels of the N:M swap search.

* :func:`relu_table`: ``out[a, b] = Σ_r max(0, columns[b, r] − thresholds[a, r])`` (single-column swap gains);
* :func:`pair_partition_gains`: for pairs of groups, the best split of their ``2m`` columns into two groups.

Compiled with numba (serial, cached on disk) when numba is installed; otherwise numpy versions compute the same
tables up to float32 summation order (ties may then send the search down a different, equally valid path).
``KERNEL`` names the one in use (benchmarks print it). Every move is re-checked in float64 before it is applied.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np

_CHUNK_ELEMENTS = 1 << 18  # elements of one numpy broadcast temporary (fits in L2)

KERNEL = "numba" if importlib.util.find_spec("numba") is not None else "numpy"
_compiled: tuple | None = None


def partitions(m: int) -> tuple[np.ndarray, np.ndarray]:
    """All splits of ``2m`` columns into two groups of ``m`` (column 0 always in the first): subsets, complements.

    Row 0 is the identity split (``0..m−1`` | ``m..2m−1``).
    """
    subsets = np.array([c for c in itertools.combinations(range(2 * m), m) if c[0] == 0], dtype=np.int64)
    complements = np.array([[i for i in range(2 * m) if i not in set(row)] for row in subsets.tolist()],
                           dtype=np.int64)
    return subsets, complements


def _relu_table_numpy(thresholds: np.ndarray, columns: np.ndarray) -> np.ndarray:
    rows_a, width = thresholds.shape
    cols_b = columns.shape[0]
    out = np.empty((rows_a, cols_b), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, cols_b * width))
    buffer = np.empty((min(step, max(rows_a, 1)), cols_b, width), dtype=np.float32)
    for start in range(0, rows_a, step):
        count = min(step, rows_a - start)
        diff = buffer[:count]
        np.subtract(columns[None, :, :], thresholds[start:start + count, None, :], out=diff)
        np.maximum(diff, 0.0, out=diff)
        diff.sum(axis=2, out=out[start:start + count])
    return out


def _pair_partition_gains_numpy(scores, group_a, group_b, subsets, complements, m, n):
    gains = np.empty(group_a.size)
    codes = np.zeros(group_a.size, dtype=np.int64)
    for p in range(group_a.size):
        cols = np.concatenate([group_a[p] * m + np.arange(m), group_b[p] * m + np.arange(m)])
        block = scores[:, cols]
        first = np.sort(block[:, subsets], axis=2)[..., m - n:].sum(axis=(0, 2))
        second = np.sort(block[:, complements], axis=2)[..., m - n:].sum(axis=(0, 2))
        totals = first + second
        codes[p] = int(np.argmax(totals))
        gains[p] = totals[codes[p]] - totals[0]
    return gains, codes


def _build_numba() -> tuple:
    import numba

    def relu_table_py(thresholds, columns):  # pragma: no cover - compiled
        rows_a, width = thresholds.shape
        cols_b = columns.shape[0]
        out = np.empty((rows_a, cols_b), np.float32)
        for a in range(rows_a):
            t = thresholds[a]
            for b in range(cols_b):
                w = columns[b]
                acc = np.float32(0.0)
                for r in range(width):
                    d = w[r] - t[r]
                    if d > 0:
                        acc += d
                out[a, b] = acc
        return out

    def pair_gains_py(scores, group_a, group_b, masks, m, n):  # pragma: no cover - compiled
        pairs = group_a.shape[0]
        rows = scores.shape[0]
        count = masks.shape[0]
        width = 2 * m
        gains = np.empty(pairs)
        codes = np.zeros(pairs, np.int64)
        for p in range(pairs):
            totals = np.zeros(count)
            vals = np.empty(width)
            order = np.empty(width, np.int64)
            for r in range(rows):
                for j in range(m):
                    vals[j] = scores[r, group_a[p] * m + j]
                    vals[m + j] = scores[r, group_b[p] * m + j]
                for j in range(width):  # insertion sort, descending
                    q = j
                    while q > 0 and vals[order[q - 1]] < vals[j]:
                        order[q] = order[q - 1]
                        q -= 1
                    order[q] = j
                for k in range(count):
                    taken_in = 0
                    taken_out = 0
                    acc = 0.0
                    for q in range(width):
                        idx = order[q]
                        if (masks[k] >> idx) & 1:
                            if taken_in < n:
                                acc += vals[idx]
                                taken_in += 1
                        elif taken_out < n:
                            acc += vals[idx]
                            taken_out += 1
                        if taken_in == n and taken_out == n:
                            break
                    totals[k] += acc
            top = 0
            for k in range(1, count):
                if totals[k] > totals[top]:
                    top = k
            codes[p] = top
            gains[p] = totals[top] - totals[0]
        return gains, codes

    def best_partners_py(table, table_t, base, m, block):  # pragma: no cover - compiled
        size = table.shape[0]
        gains = np.full(size, -np.inf)
        partners = np.full(size, -1, np.int64)
        for a in range(size):
            lo = (a // block) * block
            hi = lo + block
            own = (a // m) * m
            row = table[a]
            col = table_t[a]
            top = -np.inf
            arg = -1
            for b in range(lo, own):
                g = row[b] + col[b] + base[b]
                if g > top:
                    top = g
                    arg = b
            for b in range(own + m, hi):
                g = row[b] + col[b] + base[b]
                if g > top:
                    top = g
                    arg = b
            gains[a] = top + base[a]
            partners[a] = arg
        return gains, partners

    def update_table_py(table, table_t, thresholds, columns, rows_to_do, cols_to_do):  # pragma: no cover
        size = table.shape[1]
        width = thresholds.shape[1]
        for i in range(rows_to_do.shape[0]):
            a = rows_to_do[i]
            t = thresholds[a]
            for b in range(size):
                w = columns[b]
                acc = np.float32(0.0)
                for r in range(width):
                    d = w[r] - t[r]
                    if d > 0:
                        acc += d
                table[a, b] = acc
                table_t[b, a] = acc
        for i in range(cols_to_do.shape[0]):
            b = cols_to_do[i]
            w = columns[b]
            for a in range(table.shape[0]):
                t = thresholds[a]
                acc = np.float32(0.0)
                for r in range(width):
                    d = w[r] - t[r]
                    if d > 0:
                        acc += d
                table[a, b] = acc
                table_t[b, a] = acc

    # Serial kernels: on 2 shared cores a thread pool costs more than it gives (measured), and one process per
    # core is the better way to use both (bench/permute_nm.py).
    return tuple(numba.njit(fastmath=fast, cache=True)(fn)
                 for fn, fast in ((relu_table_py, True), (pair_gains_py, False), (best_partners_py, True),
                                  (update_table_py, True)))


def _kernels() -> tuple:
    global _compiled
    if _compiled is None:
        _compiled = _build_numba()
    return _compiled


def relu_table(thresholds: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``out[a, b] = Σ_r max(0, columns[b, r] − thresholds[a, r])`` as float32, for every (a, b)."""
    thresholds = np.ascontiguousarray(thresholds, dtype=np.float32)
    columns = np.ascontiguousarray(columns, dtype=np.float32)
    if KERNEL == "numba":
        return _kernels()[0](thresholds, columns)
    return _relu_table_numpy(thresholds, columns)


def pair_partition_gains(scores: np.ndarray, group_a: np.ndarray, group_b: np.ndarray, m: int,
                         n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best split of each pair of groups (``group_a[p]``, ``group_b[p]``) of ``scores``' columns.

    Returns:
        ``(gain, code)`` per pair: the increase of the N:M-kept sum of the two groups, and the index of the split
        in :func:`partitions` ``(m)`` (code 0, gain 0: the current split is the best).
    """
    subsets, complements = partitions(m)
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    group_a = np.ascontiguousarray(group_a, dtype=np.int64)
    group_b = np.ascontiguousarray(group_b, dtype=np.int64)
    if KERNEL == "numba":
        masks = (1 << subsets).sum(axis=1).astype(np.int64)
        return _kernels()[1](scores, group_a, group_b, masks, m, n)
    return _pair_partition_gains_numpy(scores, group_a, group_b, subsets, complements, m, n)


def _best_partners_numpy(table, table_t, base, m, block):
    size = table.shape[0]
    gain = table.astype(np.float64) + table_t + base[:, None] + base[None, :]
    idx = np.arange(size)
    gain[(idx[:, None] // m == idx[None, :] // m) | (idx[:, None] // block != idx[None, :] // block)] = -np.inf
    partners = np.argmax(gain, axis=1)
    return gain[idx, partners], partners


def best_partners(table: np.ndarray, table_t: np.ndarray, base: np.ndarray, m: int,
                  block: int) -> tuple[np.ndarray, np.ndarray]:
    """For each column ``a``, the allowed swap partner ``b`` (other group of ``m``, same block of ``block``) with
    the largest gain ``table[a,b] + table_t[a,b] + base[a] + base[b]`` (``table_t`` = ``table.T``, contiguous):
    ``(gain, partner)``; gain ``-inf`` (partner −1) when there is none."""
    base = np.ascontiguousarray(base, dtype=np.float64)
    if KERNEL == "numba":
        return _kernels()[2](table, table_t, base, int(m), int(block))
    return _best_partners_numpy(table, table_t, base, m, block)


def update_table(table: np.ndarray, table_t: np.ndarray, thresholds: np.ndarray, columns: np.ndarray,
                 rows: np.ndarray, cols: np.ndarray) -> None:
    """Recompute, in place, ``table`` rows ``rows`` and columns ``cols`` (and ``table_t``, its transpose) of
    ``table[a, b] = Σ_r max(0, columns[b, r] − thresholds[a, r])``; float32 C-contiguous arrays."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    if KERNEL == "numba":
        _kernels()[3](table, table_t, thresholds, columns, rows, cols)
        return
    block = _relu_table_numpy(thresholds[rows], columns)
    table[rows] = block
    table_t[:, rows] = block.T
    block = _relu_table_numpy(thresholds, columns[cols])
    table[:, cols] = block
    table_t[cols] = block.T


def warm_up() -> None:
    """Compile the kernels now (numba compiles on first use; its disk cache makes later processes fast)."""
    if KERNEL != "numba":
        return
    scores = np.ones((2, 8), dtype=np.float64)
    group = np.arange(8, dtype=np.int64) // 4
    masks = np.array([15], dtype=np.int64)
    relu_table_k, pair_k, partners_k, update_k = _kernels()
    square = np.zeros((8, 8), np.float32)
    update_k(square, square.copy(), scores.astype(np.float32).T.copy(), scores.astype(np.float32).T.copy(),
             np.array([0], np.int64), np.array([1], np.int64))
    relu_table_k(scores.astype(np.float32), scores.astype(np.float32))
    pair_k(scores, np.array([0]), np.array([1]), masks, 4, 2)
    partners_k(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), np.zeros(8), 4, 8)
    del group
