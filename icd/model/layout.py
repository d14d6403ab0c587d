"""The permutable dimensions of an encoder (any supported family), and which weights each one touches.

Names (used in permutation.json, correlation_matrix.npz and events), the same for every family:

* ``hidden`` — the residual stream, size H (every layer reads and writes it).
* ``layer{i}.ffn`` — the FFN intermediate channels of layer ``i``, size I.
* ``layer{i}.heads`` — the order of the A attention heads of layer ``i``, size A (not for MPNet, whose
  relative-attention bias is shared by every layer: :mod:`icd.model.families.mpnet`).
* ``layer{i}.qk`` — within-head dims of the query and key projections (moved together), size H, ``block = d``.
* ``layer{i}.vo`` — within-head dims of the value projection and the attention output projection's input,
  size H, ``block = d``.

A permutation ``perm`` of a dim means: new channel ``j`` is old channel ``perm[j]`` (``new = old[perm]``). A dim
with ``block = b`` only admits permutations that map every contiguous block of ``b`` channels onto itself.

Where each dim lives depends on the family (:mod:`icd.model.families`): Linear names are those of
``encoder.base.named_modules()`` (BERT: ``encoder.layer.0.intermediate.dense``; DistilBERT:
``transformer.layer.0.ffn.lin1``; MPNet: ``encoder.layer.0.attention.attn.q``). Classification-head Linears
(named as in ``encoder.hf.named_modules()``) never appear in these lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from torch import nn

from icd.model.families import FAMILIES, Family, base_model_of, family_of
from icd.model.families.base import ALL_KINDS, DimKind, ModelShape

__all__ = ["HIDDEN", "KIND_FAMILIES", "BertShape", "Dim", "DimKind", "LinearUse", "ModelShape", "bert_of",
           "bert_shape", "dim_users", "dims_of_shape", "head_channels", "input_readers", "layer_linears",
           "model_shape", "output_writers", "parse_dim_name", "permutable_dims", "permutation_problem"]

HIDDEN = "hidden"
KIND_FAMILIES = ("hidden", "ffn", "heads", "head_dim")
"""What ``permutable_dims(kinds=...)`` accepts; ``head_dim`` selects both ``qk`` and ``vo``."""

_LAYER_DIM = re.compile(r"^layer(\d+)\.(ffn|heads|qk|vo)$")

BertShape = ModelShape
"""The former name of :class:`~icd.model.families.base.ModelShape` (every family has the same four sizes)."""

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
class LinearUse:
    """One Linear that a dim's channels index, and along which axis of its weight.

    Attributes:
        name: path relative to the base model (``encoder.base``).
        axis: ``0`` — the Linear *writes* the channels (weight rows and bias entries); ``1`` — it *reads* them
            (weight columns).
        role: ``query`` / ``key`` / ``value`` / ``attn_out`` / ``ffn_in`` / ``ffn_out``, or ``pooler``.
        layer: the layer index (``None`` for the pooler).
    """

    name: str
    axis: int
    role: str
    layer: int | None


def bert_of(model: nn.Module) -> nn.Module:
    """The base model inside ``model`` (any family; the name is from when only BERT was supported)."""
    return base_model_of(model)


def _family(model: nn.Module | Family | None) -> Family:
    if model is None:
        return FAMILIES["bert"]
    if isinstance(model, Family):
        return model
    return family_of(model)


def model_shape(model: nn.Module) -> ModelShape:
    """Layer count and sizes of the encoder inside ``model`` (any family)."""
    return family_of(model).shape(base_model_of(model).config)


bert_shape = model_shape
"""The former name of :func:`model_shape`."""


def _kinds_of(kinds: Iterable[str]) -> list[DimKind]:
    selected: list[DimKind] = []
    for family in kinds:
        if family not in _FAMILY_KINDS:
            raise ValueError(f"kinds: unknown kind {family!r}; known: {sorted(_FAMILY_KINDS)}")
        selected.extend(k for k in _FAMILY_KINDS[family] if k not in selected)
    return selected


def _sizes(shape: ModelShape) -> dict[DimKind, tuple[int, int | None]]:
    return {
        DimKind.FFN: (shape.intermediate, None),
        DimKind.HEADS: (shape.heads, None),
        DimKind.QK: (shape.hidden, shape.head_dim),
        DimKind.VO: (shape.hidden, shape.head_dim),
    }


def dims_of_shape(shape: ModelShape, kinds: Iterable[str] = KIND_FAMILIES,
                  permutable: frozenset[DimKind] = ALL_KINDS) -> list[Dim]:
    """The permutable dims of a model of this shape (``hidden`` first, then layer by layer), restricted to the
    kinds its family admits (``permutable``: :attr:`Family.permutable`)."""
    selected = [kind for kind in _kinds_of(kinds) if kind in permutable]
    dims: list[Dim] = []
    if DimKind.HIDDEN in selected:
        dims.append(Dim(HIDDEN, shape.hidden, DimKind.HIDDEN))
    sizes = _sizes(shape)
    for layer in range(shape.layers):
        for kind in (DimKind.FFN, DimKind.HEADS, DimKind.QK, DimKind.VO):
            if kind in selected:
                size, block = sizes[kind]
                dims.append(Dim(f"layer{layer}.{kind.value}", size, kind, layer, block))
    return dims


def permutable_dims(encoder: nn.Module, kinds: Iterable[str] = KIND_FAMILIES) -> list[Dim]:
    """The permutable dimensions of ``encoder``.

    Args:
        encoder: an ``icd.model.encoder.Encoder`` (or a Hugging Face model of a supported family).
        kinds: families to include: ``hidden``, ``ffn``, ``heads``, ``head_dim`` (= ``qk`` and ``vo``);
            ``qk`` and ``vo`` are accepted alone too. Kinds the model's family does not admit (MPNet's
            ``heads``) are left out.

    Returns:
        ``hidden`` first (if selected), then per layer ``ffn``, ``heads``, ``qk``, ``vo``.
    """
    return dims_of_shape(model_shape(encoder), kinds, family_of(encoder).permutable)


def parse_dim_name(name: str, shape: ModelShape, family: Family | None = None) -> Dim:
    """The :class:`Dim` named ``name`` for a model of ``shape`` (and ``family``, when given: a kind it does not
    admit is unknown); ValueError naming it if there is none."""
    if name == HIDDEN:
        return Dim(HIDDEN, shape.hidden, DimKind.HIDDEN)
    match = _LAYER_DIM.match(name)
    if match is None or int(match.group(1)) >= shape.layers:
        raise ValueError(f"unknown permutable dim {name!r} (model has {shape.layers} layers)")
    layer, kind = int(match.group(1)), DimKind(match.group(2))
    if family is not None and kind not in family.permutable:
        raise ValueError(f"unknown permutable dim {name!r}: {family.model_type} models admit no {kind.value} dims "
                         f"({'; '.join(family.notes[:1])})")
    size, block = _sizes(shape)[kind]
    return Dim(name, size, kind, layer, block)


def layer_linears(layer: int, family: nn.Module | Family | None = None) -> dict[str, str]:
    """Names (relative to the base model) of the six Linears of one layer, by role.

    Args:
        layer: the layer index.
        family: the model (or its :class:`Family`) the names are for; ``None`` means BERT's names.
    """
    return _family(family).linears(layer)


def dim_users(encoder: nn.Module, dim_name: str) -> list[LinearUse]:
    """Every Linear of the base model that ``dim_name``'s channels index, with the weight axis they index.

    Writers first (axis 0: rows and bias), then readers (axis 1: columns). ``hidden``: writers are every
    layer's attention output and FFN output; readers every layer's query, key, value and FFN input, and the
    pooler when the model has one (the embeddings and LayerNorms also carry it but are not Linears; a
    classification head's readers are in :attr:`Family.head_hidden_readers`). ``layer{i}.ffn``: FFN input
    writes, FFN output reads. ``layer{i}.heads``: query, key, value write (in blocks of d rows, see
    :func:`head_channels`), the attention output reads. ``qk``: query and key write. ``vo``: value writes, the
    attention output reads.
    """
    family = family_of(encoder)
    shape = model_shape(encoder)
    dim = parse_dim_name(dim_name, shape, family)
    if dim.kind == DimKind.HIDDEN:
        writers, readers = [], []
        for layer in range(shape.layers):
            roles = family.linears(layer)
            writers += [LinearUse(roles[r], 0, r, layer) for r in ("attn_out", "ffn_out")]
            readers += [LinearUse(roles[r], 1, r, layer) for r in ("query", "key", "value", "ffn_in")]
        if getattr(base_model_of(encoder), "pooler", None) is not None:
            readers.append(LinearUse("pooler.dense", 1, "pooler", None))
        return writers + readers
    layer = dim.layer or 0
    roles = family.linears(layer)
    by_kind = {
        DimKind.FFN: (("ffn_in",), ("ffn_out",)),
        DimKind.HEADS: (("query", "key", "value"), ("attn_out",)),
        DimKind.QK: (("query", "key"), ()),
        DimKind.VO: (("value",), ("attn_out",)),
    }
    write, read = by_kind[dim.kind]
    return [LinearUse(roles[r], 0, r, layer) for r in write] + [LinearUse(roles[r], 1, r, layer) for r in read]


def input_readers(encoder: nn.Module, dim_name: str) -> list[str]:
    """Linears whose *input* (weight columns) is indexed by ``dim_name`` (see :func:`dim_users`).

    These are the matrices whose columns move together under that dim's permutation (what an N:M search
    along the input dimension must consider jointly). ``layer{i}.qk``: none (Q and K meet in the attention
    scores, not in a Linear's input). Names are relative to ``encoder.base``.
    """
    return [use.name for use in dim_users(encoder, dim_name) if use.axis == 1]


def output_writers(encoder: nn.Module, dim_name: str) -> list[str]:
    """Linears whose *output* (weight rows and bias) is indexed by ``dim_name`` (see :func:`dim_users`)."""
    return [use.name for use in dim_users(encoder, dim_name) if use.axis == 0]


def head_channels(encoder: nn.Module, head: int) -> slice:
    """The rows of query / key / value (and columns of the attention output) that hold attention head
    ``head``: ``slice(head * d, (head + 1) * d)``, the same in every layer and every family."""
    shape = model_shape(encoder)
    if not 0 <= head < shape.heads:
        raise ValueError(f"head {head} out of range: the model has {shape.heads} heads")
    return slice(head * shape.head_dim, (head + 1) * shape.head_dim)


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
