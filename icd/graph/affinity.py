"""Dense affinities (|correlation|-based, in [0, 1]) per kind of permutable dimension, from calibration
statistics. The formulas are documented in docs/graph.md."""

from __future__ import annotations

import numpy as np

from icd.calibrate.stats import CalibrationStats, ChannelStats
from icd.model.families import family_for
from icd.model.layout import Dim, DimKind, layer_linears


def _need(table: dict[str, ChannelStats], name: str, dim: Dim) -> ChannelStats:
    if name not in table:
        raise ValueError(f"dim {dim.name!r}: no calibration statistics for {name!r}")
    stats = table[name]
    if stats.count == 0:
        raise ValueError(f"dim {dim.name!r}: calibration statistics for {name!r} are empty (0 tokens)")
    return stats


def abs_correlation(stats: ChannelStats) -> np.ndarray:
    """|Pearson correlation| between channels (dead channels: 0)."""
    return np.abs(stats.correlation())


def head_affinity(corr: np.ndarray, heads: int) -> np.ndarray:
    """A × A: ``w_ab = ||R_ab||_F / d`` — the RMS |correlation| between the d channels of head a and of head b."""
    size = corr.shape[0]
    d = size // heads
    blocks = corr.reshape(heads, d, heads, d)
    return np.sqrt(np.einsum("aibj,aibj->ab", blocks, blocks)) / d


def dim_affinity(stats: CalibrationStats, dim: Dim) -> np.ndarray:
    """The dense affinity matrix of ``dim`` (before sparsification).

    * ``hidden``: |corr| of the residual stream (every LayerNorm output).
    * ``ffn``: |corr| of the FFN output dense's input (the activated intermediate channels).
    * ``heads``: :func:`head_affinity` of |corr| of the attention output dense's input (the per-head contexts).
    * ``qk``: ``(|corr(Q)| + |corr(K)|) / 2`` of the query and key outputs (within blocks after sparsifying).
    * ``vo``: |corr| of the attention output dense's input (within blocks after sparsifying).
    """
    if dim.kind == DimKind.HIDDEN:
        if stats.hidden.count == 0:
            raise ValueError(f"dim {dim.name!r}: the hidden-stream statistics are empty (0 tokens)")
        return abs_correlation(stats.hidden)
    # Statistics are keyed by the Linear names of the model they came from (its family's: calibrate/run.py).
    roles = layer_linears(dim.layer or 0, family_for(str(stats.meta.get("model_type", "bert"))))
    if dim.kind == DimKind.FFN:
        return abs_correlation(_need(stats.inputs, roles["ffn_out"], dim))
    if dim.kind == DimKind.QK:
        query = abs_correlation(_need(stats.outputs, roles["query"], dim))
        key = abs_correlation(_need(stats.outputs, roles["key"], dim))
        return (query + key) / 2.0
    context = abs_correlation(_need(stats.inputs, roles["attn_out"], dim))
    if dim.kind == DimKind.VO:
        return context
    return head_affinity(context, dim.size)
