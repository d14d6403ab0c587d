"""Compiled passes of the locality refinement (numba when installed, the same code as plain Python otherwise).

A move rewrites the positions of one contiguous segment ``[lo, hi)``: ``new_of[p - lo]`` is the new position of
the channel now at position ``p``. Its exact change of ``J = Σ_{i<j} s_ij (pos(i) − pos(j))²`` reads only the
edges of the segment's channels (symmetric CSR ``indptr / indices / data``); pairs inside the segment are seen
from both ends and counted half each time.
"""

from __future__ import annotations

import importlib.util

import numpy as np

if importlib.util.find_spec("numba") is not None:
    import numba

    _jit = numba.njit(cache=True)
else:  # pragma: no cover - depends on the environment

    def _jit(fn):
        return fn


@_jit
def segment_delta(indptr, indices, data, perm, pos, lo, hi, new_of):  # pragma: no cover - compiled
    """Exact change of J when the channels at positions ``[lo, hi)`` move to ``new_of``."""
    delta = 0.0
    for p in range(lo, hi):
        c = perm[p]
        np_c = new_of[p - lo]
        for e in range(indptr[c], indptr[c + 1]):
            k = indices[e]
            kp = pos[k]
            w = data[e]
            if lo <= kp < hi:
                nk = new_of[kp - lo]
                w = 0.5 * w
            else:
                nk = kp
            old_d = p - kp
            new_d = np_c - nk
            delta += w * (new_d * new_d - old_d * old_d)
    return delta


@_jit
def apply_segment(perm, pos, lo, hi, new_of):  # pragma: no cover - compiled
    """Move the channels at ``[lo, hi)`` to ``new_of``."""
    moved = perm[lo:hi].copy()
    for i in range(hi - lo):
        perm[new_of[i]] = moved[i]
        pos[moved[i]] = new_of[i]


@_jit
def window_move(slot, target, unit):  # pragma: no cover - compiled
    """Segment and new positions when the unit at ``slot`` moves to slot ``target``."""
    lo = min(slot, target) * unit
    hi = (max(slot, target) + 1) * unit
    new_of = np.empty(hi - lo, np.int64)
    shift = (target - slot) * unit
    back = -unit if shift > 0 else unit
    for p in range(lo, hi):
        if slot * unit <= p < (slot + 1) * unit:
            new_of[p - lo] = p + shift
        else:
            new_of[p - lo] = p + back
    return lo, hi, new_of


@_jit
def window_pass(indptr, indices, data, perm, pos, unit, block, window, eps):  # pragma: no cover - compiled
    """One pass of best-in-window unit moves over every slot; returns the number of moves applied."""
    slots = perm.shape[0] // unit
    per_block = block // unit
    moves = 0
    for slot in range(slots):
        first = (slot // per_block) * per_block
        best = -eps
        best_target = -1
        for target in range(max(first, slot - window), min(first + per_block, slot + window + 1)):
            if target == slot:
                continue
            lo, hi, new_of = window_move(slot, target, unit)
            change = segment_delta(indptr, indices, data, perm, pos, lo, hi, new_of)
            if change < best:
                best = change
                best_target = target
        if best_target >= 0:
            lo, hi, new_of = window_move(slot, best_target, unit)
            apply_segment(perm, pos, lo, hi, new_of)
            moves += 1
    return moves


@_jit
def in_unit_pass(indptr, indices, data, perm, pos, unit, eps):  # pragma: no cover - compiled
    """Adjacent swaps inside every unit; returns the number of swaps applied."""
    moves = 0
    new_of = np.empty(2, np.int64)
    for start in range(0, perm.shape[0], unit):
        for i in range(start, start + unit - 1):
            new_of[0] = i + 1
            new_of[1] = i
            if segment_delta(indptr, indices, data, perm, pos, i, i + 2, new_of) < -eps:
                apply_segment(perm, pos, i, i + 2, new_of)
                moves += 1
    return moves
