"""The permutable dimensions of a BERT encoder, and which weights each one touches.

Names (used in permutation.json, correlation_matrix.npz and events):

* ``hidden`` — the residual stream, size H (every layer reads and writes it).
* ``layer{i}.ffn`` — the FFN intermediate channels of layer ``i``, size I.
* ``layer{i}.heads`` — the order of the A attention heads of layer ``i``, size A.
* ``layer{i}.qk`` — within-head dims of the query and key projections (moved together), size H, ``block = d``.
* ``layer{i}.vo`` — within-head dims of the value projection and the attention output projection's input,
  size H, ``block = d``.

A permutation ``perm`` of a dim means: new channel ``j`` is old channel ``perm[j]`` (``new = old[perm]``). A dim
with ``block = b`` only admits permutations that map every contiguous block of ``b`` channels onto itself.

Linear names are those of ``encoder.bert.named_modules()`` (e.g. ``encoder.layer.0.intermediate.dense``,
``pooler.dense``). The classification head (``classifier``, named as in ``encoder.hf.named_modules()``) reads
the pooler's output, which is not a permutable dimension, so it never appears in these lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np
from torch import nn

HIDDEN = "hidden"
KIND_FAMILIES = ("hidden", "ffn", "heads", "head_dim")
"""What ``permutable_dims(kinds=...)`` accepts; ``head_dim`` selects both ``qk`` and ``vo``."""

_LAYER_DIM = re.compile(r"^layer(\d+)\.(ffn|heads|qk|vo)$")


class DimKind(str, Enum):
    """What a permutable dimension is."""

    HIDDEN = "hidden"
    """The residual stream (embeddings, every LayerNorm, every Linear reading or writing it)."""
    FFN = "ffn"
    """FFN intermediate channels: rows of the intermediate dense, columns of the output dense."""
    HEADS = "heads"
    """Whole attention heads: blocks of d rows of Q, K, V and d columns of the attention output dense."""
    QK = "qk"
    """Within-head dims of Q and K together (attention scores unchanged)."""
    VO = "vo"
    """Within-head dims of V together with the attention output dense's input columns."""


_FAMILY_KINDS = {
    "hidden": (DimKind.HIDDEN,),
    "ffn": (DimKind.FFN,),
    "heads": (DimKind.HEADS,),
    "head_dim": (DimKind.QK, DimKind.VO),
    "qk": (DimKind.QK,),
    "vo": (DimKind.VO,),
}


@dataclass(frozen=True)
class Dim:
    """One permutable dimension.

    Attributes:
        name: ``hidden`` or ``layer{i}.{ffn|heads|qk|vo}``.
        size: number of channels (H, I, A or H).
        kind: what it is.
        layer: the layer index, ``None`` for ``hidden``.
        block: ``None`` (any permutation) or the block size every block of which must map onto itself
            (``d = H / A`` for ``qk`` and ``vo``).
    """

    name: str
    size: int
    kind: DimKind
    layer: int | None = None
    block: int | None = None


@dataclass(frozen=True)
class BertShape:
    """The sizes that define the permutable dimensions of a BERT model."""

    layers: int
    hidden: int
    intermediate: int
    heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def bert_of(model: nn.Module) -> nn.Module:
    """The ``BertModel`` inside an ``Encoder``, a ``BertFor*`` model or a ``BertModel`` itself."""
    inner = getattr(model, "bert", None)
    if isinstance(inner, nn.Module):
        return inner
    hf = getattr(model, "hf", None)
    if isinstance(hf, nn.Module):
        return bert_of(hf)
    if hasattr(model, "encoder") and hasattr(model, "embeddings"):
        return model
    raise TypeError(f"not a BERT model: {type(model).__name__} has no BertModel inside")


def bert_shape(model: nn.Module) -> BertShape:
    """Layer count and sizes of the BERT model inside ``model``."""
    config = bert_of(model).config
    return BertShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        heads=config.num_attention_heads,
    )


def _kinds_of(kinds: Iterable[str]) -> list[DimKind]:
    selected: list[DimKind] = []
    for family in kinds:
        if family not in _FAMILY_KINDS:
            raise ValueError(f"kinds: unknown kind {family!r}; known: {sorted(_FAMILY_KINDS)}")
        selected.extend(k for k in _FAMILY_KINDS[family] if k not in selected)
    return selected


def dims_of_shape(shape: BertShape, kinds: Iterable[str] = KIND_FAMILIES) -> list[Dim]:
    """The permutable dims of a model of this shape (``hidden`` first, then layer by layer)."""
    selected = _kinds_of(kinds)
    dims: list[Dim] = []
    if DimKind.HIDDEN in selected:
        dims.append(Dim(HIDDEN, shape.hidden, DimKind.HIDDEN))
    per_layer = {
        DimKind.FFN: (shape.intermediate, None),
        DimKind.HEADS: (shape.heads, None),
        DimKind.QK: (shape.hidden, shape.head_dim),
        DimKind.VO: (shape.hidden, shape.head_dim),
    }
    for layer in range(shape.layers):
        for kind in (DimKind.FFN, DimKind.HEADS, DimKind.QK, DimKind.VO):
            if kind in selected:
                size, block = per_layer[kind]
                dims.append(Dim(f"layer{layer}.{kind.value}", size, kind, layer, block))
    return dims


def permutable_dims(encoder: nn.Module, kinds: Iterable[str] = KIND_FAMILIES) -> list[Dim]:
    """The permutable dimensions of ``encoder``'s BERT model.

    Args:
        encoder: an ``icd.model.encoder.Encoder`` (or any module with a ``BertModel`` inside).
        kinds: families to include: ``hidden``, ``ffn``, ``heads``, ``head_dim`` (= ``qk`` and ``vo``);
            ``qk`` and ``vo`` are accepted alone too.

    Returns:
        ``hidden`` first (if selected), then per layer ``ffn``, ``heads``, ``qk``, ``vo``.
    """
    return dims_of_shape(bert_shape(encoder), kinds)


def parse_dim_name(name: str, shape: BertShape) -> Dim:
    """The :class:`Dim` named ``name`` for a model of ``shape``; ValueError naming it if there is none."""
    if name == HIDDEN:
        return Dim(HIDDEN, shape.hidden, DimKind.HIDDEN)
    match = _LAYER_DIM.match(name)
    if match is None or int(match.group(1)) >= shape.layers:
        raise ValueError(f"unknown permutable dim {name!r} (model has {shape.layers} layers)")
    layer, kind = int(match.group(1)), DimKind(match.group(2))
    sizes = {
        DimKind.FFN: (shape.intermediate, None),
        DimKind.HEADS: (shape.heads, None),
        DimKind.QK: (shape.hidden, shape.head_dim),
        DimKind.VO: (shape.hidden, shape.head_dim),
    }
    size, block = sizes[kind]
    return Dim(name, size, kind, layer, block)


def layer_linears(layer: int) -> dict[str, str]:
    """Names (relative to the BertModel) of the six Linears of one layer, by role."""
    prefix = f"encoder.layer.{layer}"
    return {
        "query": f"{prefix}.attention.self.query",
        "key": f"{prefix}.attention.self.key",
        "value": f"{prefix}.attention.self.value",
        "attn_out": f"{prefix}.attention.output.dense",
        "ffn_in": f"{prefix}.intermediate.dense",
        "ffn_out": f"{prefix}.output.dense",
    }


def _has_pooler(encoder: nn.Module) -> bool:
    return getattr(bert_of(encoder), "pooler", None) is not None


def input_readers(encoder: nn.Module, dim_name: str) -> list[str]:
    """Linears whose *input* (weight columns) is indexed by ``dim_name``.

    These are the matrices whose columns move together under that dim's permutation (what an N:M search
    along the input dimension must consider jointly). ``hidden``: query/key/value/intermediate dense of every
    layer, and ``pooler.dense`` when the model has a pooler. ``layer{i}.ffn``: that layer's output dense.
    ``layer{i}.heads`` and ``layer{i}.vo``: that layer's attention output dense (for ``heads`` in blocks of d
    columns). ``layer{i}.qk``: none (Q and K meet in the attention scores, not in a Linear's input).

    Names are relative to ``encoder.bert`` (``encoder.bert.named_modules()``).
    """
    shape = bert_shape(encoder)
    dim = parse_dim_name(dim_name, shape)
    if dim.kind == DimKind.HIDDEN:
        names = []
        for layer in range(shape.layers):
            roles = layer_linears(layer)
            names += [roles["query"], roles["key"], roles["value"], roles["ffn_in"]]
        if _has_pooler(encoder):
            names.append("pooler.dense")
        return names
    roles = layer_linears(dim.layer or 0)
    if dim.kind == DimKind.FFN:
        return [roles["ffn_out"]]
    if dim.kind in (DimKind.HEADS, DimKind.VO):
        return [roles["attn_out"]]
    return []


def output_writers(encoder: nn.Module, dim_name: str) -> list[str]:
    """Linears whose *output* (weight rows and bias) is indexed by ``dim_name`` (same naming as
    :func:`input_readers`). ``hidden``: attention output dense and FFN output dense of every layer (the
    embeddings and LayerNorms also write it but are not Linears). ``ffn``: the intermediate dense. ``heads``:
    query, key and value. ``qk``: query and key. ``vo``: value."""
    shape = bert_shape(encoder)
    dim = parse_dim_name(dim_name, shape)
    if dim.kind == DimKind.HIDDEN:
        names = []
        for layer in range(shape.layers):
            roles = layer_linears(layer)
            names += [roles["attn_out"], roles["ffn_out"]]
        return names
    roles = layer_linears(dim.layer or 0)
    by_kind = {
        DimKind.FFN: ["ffn_in"],
        DimKind.HEADS: ["query", "key", "value"],
        DimKind.QK: ["query", "key"],
        DimKind.VO: ["value"],
    }
    return [roles[role] for role in by_kind[dim.kind]]


def permutation_problem(perm: np.ndarray, size: int, block: int | None) -> str | None:
    """Why ``perm`` is not a valid permutation of ``range(size)`` respecting ``block``; ``None`` if it is."""
    if perm.size != size:
        return f"has {perm.size} entries, expected size {size}"
    seen = np.zeros(size, dtype=bool)
    out = np.flatnonzero((perm < 0) | (perm >= size))
    if out.size:
        return f"not a permutation of range({size}): value {perm[out[0]]} at index {out[0]}"
    seen[perm] = True
    if not seen.all():
        return f"not a permutation of range({size}): {int(np.flatnonzero(~seen)[0])} is missing"
    if block:
        if size % block:
            return f"block {block} does not divide size {size}"
        crossing = np.flatnonzero(perm // block != np.arange(size) // block)
        if crossing.size:
            j = int(crossing[0])
            return f"moves channel {perm[j]} to position {j}, across blocks of {block}"
    return None
