"""Fold channel permutations into an encoder's weights (any supported family), so it computes the same function.

Every permutation is ``new = old[perm]`` in the layout of the model *as passed in* (the layout the statistics
were computed in). Where each Linear lives is the family's business (:mod:`icd.model.families`); by role, what
each dim moves:

* ``layer{i}.ffn``: rows of the FFN input Linear (weight and bias), columns of the FFN output Linear.
* ``layer{i}.heads``: whole blocks of d rows of query, key and value (weights and biases) and the matching
  blocks of d columns of the attention output Linear (not for MPNet: its relative-attention bias is shared by
  every layer, :mod:`icd.model.families.mpnet`).
* ``layer{i}.qk``: rows (and bias) of query and key, by the same within-head permutation — scores unchanged.
* ``layer{i}.vo``: rows (and bias) of value and the attention output Linear's columns.
  Within a layer ``qk`` / ``vo`` are applied before ``heads``, so block ``h`` of a ``qk`` permutation refers
  to the head that was at position ``h`` in the incoming model.
* ``hidden``: columns of every embedding table (word, position, and token-type where the family has one);
  weight and bias of every residual LayerNorm; columns of every Linear reading the residual stream (query, key,
  value, FFN input, pooler) and of the classification head's Linears that read it (RoBERTa's and MPNet's
  ``classifier.dense``, DistilBERT's ``pre_classifier``); rows and bias of every Linear writing it (attention
  output, FFN output). Nothing else: BERT's pooler output is not the residual stream, so the pooler's rows and
  BERT's classifier are untouched, and a ``sequence_classification`` model's logits are unchanged in every
  family.

The output basis: an ``embedding`` model outputs the (mean-pooled) residual stream itself, so a folded
``hidden`` permutation would reorder its output vector (``out_new = out_old[perm]``); no weight can absorb that.
By default :func:`apply_permutations_` therefore composes the inverse into the Encoder's output gather
(``Encoder.set_output_index``: one gather of H floats per text — the only runtime permutation icd leaves, and
only for ``embedding`` models with a permuted hidden dim), so the Encoder computes exactly the same function.
``keep_output=False`` leaves the output in the permuted basis instead (for consumers that accept it: cosine
similarity and nearest neighbours among outputs of the *same* model do not depend on the basis); then
:func:`output_basis_dim` names the dim to record in permutation.json (``output_basis_perm``) and
:func:`unpermute_output` maps outputs back. A ``sequence_classification`` model needs neither: the pooler's
columns absorb the permutation and the logits are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from icd.model.families import Family, base_model_of, family_of
from icd.model.layout import HIDDEN, Dim, DimKind, ModelShape, model_shape, parse_dim_name, permutation_problem


def check_permutation(perm: np.ndarray, dim: Dim) -> np.ndarray:
    """``perm`` as an int64 array after checking it against ``dim``.

    Raises:
        ValueError: naming the dim and the problem (shape, size, not a permutation, block violation).
    """
    array = np.asarray(perm)
    if array.ndim != 1:
        raise ValueError(f"dim {dim.name!r}: permutation must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        if array.size and not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"dim {dim.name!r}: permutation entries must be integers")
    array = array.astype(np.int64)
    problem = permutation_problem(array, dim.size, dim.block)
    if problem:
        raise ValueError(f"dim {dim.name!r}: permutation {problem}")
    return array


def inverse_permutation(perm: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm] = arange(n)``, so ``x_new[inv] == x_old``."""
    perm = np.asarray(perm, dtype=np.int64)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(perm.size, dtype=np.int64)
    return inverse


def head_rows(head_perm: np.ndarray, head_dim: int) -> np.ndarray:
    """Expand a permutation of heads to the permutation of the H = A*d channels it moves."""
    head_perm = np.asarray(head_perm, dtype=np.int64)
    return (head_perm[:, None] * head_dim + np.arange(head_dim)[None, :]).reshape(-1)


def _linear(owner: nn.Module, name: str) -> nn.Linear:
    module = owner.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{name}: expected nn.Linear to permute, found {type(module).__name__} (permute before "
                        "transforms that replace Linears)")
    return module


def _index(perm: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(perm, dtype=torch.long, device=device)


def _permute_rows(linear: nn.Linear, perm: np.ndarray) -> None:
    idx = _index(perm, linear.weight.device)
    linear.weight.data = linear.weight.data.index_select(0, idx).contiguous()
    if linear.bias is not None:
        linear.bias.data = linear.bias.data.index_select(0, idx).contiguous()


def _permute_columns(linear: nn.Linear, perm: np.ndarray) -> None:
    idx = _index(perm, linear.weight.device)
    linear.weight.data = linear.weight.data.index_select(1, idx).contiguous()


def _permute_vector(param: torch.Tensor, perm: np.ndarray) -> None:
    param.data = param.data.index_select(0, _index(perm, param.device)).contiguous()


def _apply_hidden(encoder: nn.Module, family: Family, shape: ModelShape, perm: np.ndarray) -> None:
    base = base_model_of(encoder)
    for name in family.embedding_tables:
        table = base.get_submodule(name)
        table.weight.data = table.weight.data.index_select(1, _index(perm, table.weight.device)).contiguous()
    for layer in range(shape.layers):
        roles = family.linears(layer)
        for role in ("query", "key", "value", "ffn_in"):
            _permute_columns(_linear(base, roles[role]), perm)
        for role in ("attn_out", "ffn_out"):
            _permute_rows(_linear(base, roles[role]), perm)
    for name in family.residual_norms(shape.layers):
        norm = base.get_submodule(name)
        _permute_vector(norm.weight, perm)
        if norm.bias is not None:
            _permute_vector(norm.bias, perm)
    if getattr(base, "pooler", None) is not None:
        _permute_columns(_linear(base, "pooler.dense"), perm)
    hf = getattr(encoder, "hf", encoder)
    if hf is not base:
        for name in family.head_hidden_readers:
            _permute_columns(_linear(hf, name), perm)


def _apply_layer(base: nn.Module, family: Family, shape: ModelShape, layer: int, kind: DimKind,
                 perm: np.ndarray) -> None:
    roles = family.linears(layer)
    if kind == DimKind.FFN:
        _permute_rows(_linear(base, roles["ffn_in"]), perm)
        _permute_columns(_linear(base, roles["ffn_out"]), perm)
    elif kind == DimKind.QK:
        _permute_rows(_linear(base, roles["query"]), perm)
        _permute_rows(_linear(base, roles["key"]), perm)
    elif kind == DimKind.VO:
        _permute_rows(_linear(base, roles["value"]), perm)
        _permute_columns(_linear(base, roles["attn_out"]), perm)
    elif kind == DimKind.HEADS:
        rows = head_rows(perm, shape.head_dim)
        for role in ("query", "key", "value"):
            _permute_rows(_linear(base, roles[role]), rows)
        _permute_columns(_linear(base, roles["attn_out"]), rows)
    else:  # pragma: no cover - hidden is handled separately
        raise ValueError(f"layer dim of unexpected kind {kind}")


# Within a layer: within-head dims first (they refer to incoming head positions), then head order.
_LAYER_ORDER = (DimKind.FFN, DimKind.QK, DimKind.VO, DimKind.HEADS)


def validate_permutations(encoder: nn.Module, perms: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check every ``perms`` entry against the encoder's dims; return them as int64 arrays.

    Raises:
        ValueError: unknown dim name, wrong size, not a permutation, or a block violation (naming the dim).
    """
    shape, family = model_shape(encoder), family_of(encoder)
    return {name: check_permutation(perm, parse_dim_name(name, shape, family)) for name, perm in perms.items()}


@torch.no_grad()
def apply_permutations_(encoder: nn.Module, perms: Mapping[str, np.ndarray], *, keep_output: bool = True) -> None:
    """Fold ``perms`` (dim name → ``new = old[perm]``) into ``encoder``'s weights, in place.

    All permutations are validated before any weight changes, so a bad one leaves the model untouched.
    Identity permutations are skipped. Calling it again on the permuted model composes (the second call's
    permutations are in the permuted layout; :func:`compose_permutations` gives the total).

    Args:
        encoder: an ``Encoder`` (or a Hugging Face model of a supported family), not yet int8-converted.
        perms: dim name (see :mod:`icd.model.layout`) → permutation.
        keep_output: for an ``embedding`` Encoder with a permuted ``hidden`` dim, compose the inverse into the
            Encoder's output gather so its output is unchanged (see the module docstring). ``False`` leaves the
            output in the permuted basis.

    Raises:
        ValueError: a dim name unknown to this model (MPNet: any ``heads`` dim), wrong size, not a permutation,
            or a ``qk`` / ``vo`` permutation that crosses head blocks.
        TypeError: a weight to permute is no longer an ``nn.Linear`` (permute before int8 conversion).
    """
    checked = validate_permutations(encoder, perms)
    base, family, shape = base_model_of(encoder), family_of(encoder), model_shape(encoder)
    active = {name: p for name, p in checked.items() if not np.array_equal(p, np.arange(p.size))}
    if HIDDEN in active:
        _apply_hidden(encoder, family, shape, active[HIDDEN])
        if keep_output and getattr(encoder, "task", None) == "embedding" and hasattr(encoder, "set_output_index"):
            _compose_output_index(encoder, active[HIDDEN])
    for layer in range(shape.layers):
        for kind in _LAYER_ORDER:
            name = f"layer{layer}.{kind.value}"
            if name in active:
                _apply_layer(base, family, shape, layer, kind, active[name])


def _compose_output_index(encoder: nn.Module, hidden_perm: np.ndarray) -> None:
    # raw_new = raw_old[perm] and out = raw_old[index_old]  =>  out = raw_new[inverse(perm)[index_old]].
    current = getattr(encoder, "output_index", None)
    index_old = np.arange(hidden_perm.size) if current is None else current.cpu().numpy()
    index_new = inverse_permutation(hidden_perm)[index_old]
    identity = np.array_equal(index_new, np.arange(index_new.size))
    encoder.set_output_index(None if identity else torch.as_tensor(index_new, dtype=torch.long))


def output_basis_dim(task: str, perms: Mapping[str, np.ndarray]) -> str | None:
    """The dim whose permutation the model's *output* is expressed in, or ``None`` if the output is unchanged.

    ``"hidden"`` for an ``embedding`` model with a non-identity hidden permutation (its output is the residual
    stream); ``None`` otherwise (a classifier's logits never move).
    """
    perm = perms.get(HIDDEN)
    if task != "embedding" or perm is None:
        return None
    perm = np.asarray(perm)
    return None if np.array_equal(perm, np.arange(perm.size)) else HIDDEN


def unpermute_output(output: torch.Tensor | np.ndarray, hidden_perm: np.ndarray | None):
    """Map an ``embedding`` output of a hidden-permuted model back to the original basis (last axis).

    ``out_new = out_old[..., perm]``, so ``out_old = out_new[..., inverse(perm)]``. ``None`` returns ``output``.
    """
    if hidden_perm is None:
        return output
    inverse = inverse_permutation(hidden_perm)
    if isinstance(output, torch.Tensor):
        return output.index_select(-1, torch.as_tensor(inverse, device=output.device))
    return np.asarray(output)[..., inverse]


def compose_permutations(
    first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], head_dim: int
) -> dict[str, np.ndarray]:
    """The single set of permutations equal to applying ``first`` and then ``second``.

    For independent dims the result is ``first[second]``. ``qk`` / ``vo`` interact with ``heads`` (they are
    applied before it within one call), so for those the effective row permutation ``p[rows(P)]`` of both calls
    is composed and split back into a head order ``P = P1[P2]`` and a within-head part.

    Args:
        first: permutations applied first (layout of the original model).
        second: permutations applied after (layout of the model permuted by ``first``).
        head_dim: d = H / A, the within-head block size.
    """
    names = set(first) | set(second)
    result: dict[str, np.ndarray] = {}

    def get(perms: Mapping[str, np.ndarray], name: str, size: int) -> np.ndarray:
        return np.asarray(perms[name], dtype=np.int64) if name in perms else np.arange(size, dtype=np.int64)

    for name in sorted(names):
        if name.endswith((".qk", ".vo", ".heads")):
            continue
        size = len(first.get(name, second.get(name)))
        result[name] = get(first, name, size)[get(second, name, size)]
    layers = sorted({name.split(".")[0] for name in names if name.endswith((".qk", ".vo", ".heads"))})
    for layer in layers:
        heads_name = f"{layer}.heads"
        within = [f"{layer}.qk", f"{layer}.vo"]
        heads_size = next((len(p[heads_name]) for p in (first, second) if heads_name in p), None)
        hidden_size = next((len(p[n]) for p in (first, second) for n in within if n in p), None)
        if heads_size is None:
            heads_size = hidden_size // head_dim
        if hidden_size is None:
            hidden_size = heads_size * head_dim
        heads1, heads2 = get(first, heads_name, heads_size), get(second, heads_name, heads_size)
        heads = heads1[heads2]
        if heads_name in names:
            result[heads_name] = heads
        rows_total = head_rows(heads, head_dim)
        for name in within:
            if name not in names:
                continue
            effective = get(first, name, hidden_size)[head_rows(heads1, head_dim)]
            effective = effective[get(second, name, hidden_size)[head_rows(heads2, head_dim)]]
            result[name] = effective[inverse_permutation(rows_total)]
    return result
