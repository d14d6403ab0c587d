"""Channel index spaces of a run: every artefact is written in the *original* model's channel order.

An iterative run calibrates the model it already permuted, so that calibration's graphs and statistics are
indexed by the permuted model's channels, while ``permutation.json`` holds the permutations composed from the
original order. Scoring one with the other mixes two index spaces. These helpers map what was measured on a
permuted model back to the original order (docs/artefacts.md, ``correlation_matrix.npz``).

If a model is the original folded with ``perms`` (new channel ``j`` is old channel ``perms[dim][j]``), its channel
``j`` of dim ``d`` *is* original channel ``origins[d][j]``; an edge ``(i, j)`` measured on it is the edge
``(origins[d][i], origins[d][j])`` of the original.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import sparse
from torch import nn

from icd.calibrate.stats import CalibrationStats, ChannelStats
from icd.model.families import family_of
from icd.model.layout import Dim, DimKind, bert_shape, input_readers, permutable_dims
from icd.transforms.permute import head_rows, inverse_permutation


def _get(perms: Mapping[str, np.ndarray], name: str, size: int) -> np.ndarray:
    return np.asarray(perms[name], dtype=np.int64) if name in perms else np.arange(size, dtype=np.int64)


def channel_origins(perms: Mapping[str, np.ndarray], dims: list[Dim], head_dim: int) -> dict[str, np.ndarray]:
    """``{dim: origin}``: channel ``j`` of the model folded with ``perms`` is original channel ``origin[j]``.

    ``hidden``, ``ffn`` and ``heads`` move by their own permutation. ``qk`` / ``vo`` are permuted within heads
    and then moved with whole heads, so their origin is the effective row permutation
    ``within[head_rows(heads)]`` (as in :func:`icd.transforms.permute.compose_permutations`).
    """
    origins: dict[str, np.ndarray] = {}
    for dim in dims:
        if dim.kind in (DimKind.QK, DimKind.VO):
            heads = _get(perms, f"layer{dim.layer}.heads", dim.size // head_dim)
            origins[dim.name] = _get(perms, dim.name, dim.size)[head_rows(heads, head_dim)]
        else:
            origins[dim.name] = _get(perms, dim.name, dim.size)
    return origins


def graph_in_original_order(graph: sparse.spmatrix, origin: np.ndarray) -> sparse.csr_matrix:
    """The graph measured on a permuted model, re-indexed by original channel: ``G0[origin[i], origin[j]] =
    G[i, j]``."""
    if graph.shape != (origin.size, origin.size):
        raise ValueError(f"graph of shape {graph.shape} and channel origin of size {origin.size} differ")
    back = inverse_permutation(origin)  # original channel a sits at position back[a] of the permuted model
    return sparse.csr_matrix(graph)[back][:, back].tocsr()


def graphs_in_original_order(graphs: Mapping[str, sparse.spmatrix], origins: Mapping[str, np.ndarray]
                             ) -> dict[str, sparse.csr_matrix]:
    """Every graph re-indexed by original channel (graphs of dims without an origin are returned unchanged)."""
    return {name: graph_in_original_order(graph, origins[name]) if name in origins else sparse.csr_matrix(graph)
            for name, graph in graphs.items()}


def input_origins(encoder: nn.Module, perms: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{linear name: origin}`` for the input channels of every Linear that reads a permutable dim of
    ``encoder`` folded with ``perms`` — the classification head's readers of the residual stream
    (:attr:`Family.head_hidden_readers`) included — and ``"hidden"`` for the residual stream (the tables of a
    calibration)."""
    dims = permutable_dims(encoder)
    origins = channel_origins(perms, dims, bert_shape(encoder).head_dim)
    by_linear: dict[str, np.ndarray] = {}
    if "hidden" in origins:
        by_linear["hidden"] = origins["hidden"]
        by_linear.update({name: origins["hidden"] for name in family_of(encoder).head_hidden_readers})
    for dim in dims:
        if dim.kind is DimKind.QK:
            continue  # Q and K meet in the attention scores, not in a Linear's input
        source = dim.name
        if dim.kind is DimKind.HEADS:
            source = f"layer{dim.layer}.vo"  # the attention output dense's columns move with heads and vo
        for linear in input_readers(encoder, dim.name):
            by_linear[linear] = origins[source]
    return by_linear


def vector_in_original_order(values: np.ndarray, origin: np.ndarray | None) -> np.ndarray:
    """A per-channel vector measured on a permuted model, re-indexed by original channel."""
    if origin is None:
        return np.asarray(values)
    out = np.empty_like(np.asarray(values))
    out[origin] = values
    return out


def stats_after_fold(stats: CalibrationStats, encoder: nn.Module, perms: Mapping[str, np.ndarray]
                     ) -> CalibrationStats:
    """What calibrating ``encoder`` folded with ``perms`` measures, from ``stats`` measured on ``encoder`` itself.

    A fold preserves the function, so every activation of the folded model is the same activation with its
    channels reordered (channel ``j`` is channel ``origin[j]`` of ``encoder``): Linear inputs, the query / key
    outputs and the residual stream are reordered; everything else (a classifier's out projection) is kept. Equal
    to a re-calibration up to the rounding of the sums (tests/pipeline/test_index_space.py); an iterative run uses
    it instead of calibrating a model that differs from the calibrated one only by permutations.
    """
    shape, family = bert_shape(encoder), family_of(encoder)
    origins = channel_origins(perms, permutable_dims(encoder), shape.head_dim)
    by_input = input_origins(encoder, perms)
    hidden = by_input.pop("hidden", None)
    by_output: dict[str, np.ndarray] = {}
    for layer in range(shape.layers):
        qk = origins.get(f"layer{layer}.qk")
        if qk is not None:
            roles = family.linears(layer)
            by_output.update({roles["query"]: qk, roles["key"]: qk})

    def reorder(table: Mapping[str, ChannelStats], by_name: Mapping[str, np.ndarray]) -> dict[str, ChannelStats]:
        return {name: table_stats.reordered(by_name[name]) if name in by_name else table_stats.copy()
                for name, table_stats in table.items()}

    return CalibrationStats(
        inputs=reorder(stats.inputs, by_input),
        outputs=reorder(stats.outputs, by_output),
        hidden=stats.hidden.reordered(hidden) if hidden is not None else stats.hidden.copy(),
        meta={**stats.meta, "reordered_by_fold": True},
    )
