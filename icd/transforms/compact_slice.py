"""Permute-to-front + slice: keep some FFN channels / attention heads of one layer, the model stays dense.

Keeping the channels ``keep`` of a dim (in that order) is folding the permutation that moves them to the front,
then cutting the tail: the Linears that *write* the dim lose the other rows (weight and bias), the Linears that
*read* it lose the other columns. Which Linears those are comes from the model family (:mod:`icd.model.families`:
the FFN input writes ``layer{i}.ffn``, the FFN output reads it; query / key / value write a head's ``d = hidden /
heads`` channels, the attention output reads them). The result is an ordinary, smaller
dense model — per-layer head counts and intermediate sizes — that every runtime runs with its dense kernels.

Hugging Face configs hold one ``intermediate_size`` and one head count, so the per-layer sizes
(:func:`layer_sizes`, read from the weights themselves) are saved with the model (``icd_model.json``) and
:func:`resize_` rebuilds those shapes before the weights are loaded back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icd.model.families import family_of
from icd.model.layout import bert_of, model_shape

HEAD_COUNT_ATTRIBUTES = ("num_attention_heads", "n_heads")
"""Attributes of an attention module that hold its head count (BERT / RoBERTa / MPNet, DistilBERT)."""


@dataclass(frozen=True)
class LayerSize:
    """The size of one encoder layer's compactable dims."""

    heads: int
    intermediate: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def head_dim(encoder: nn.Module) -> int:
    """Channels per attention head (``hidden / heads`` of the config; compaction never changes it)."""
    return model_shape(encoder).head_dim


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's layers, in order (where they live is the model family's)."""
    return list(bert_of(encoder).get_submodule(family_of(encoder).layers))


def layer_roles(encoder: nn.Module, layer: int) -> dict[str, str]:
    """Role (``query`` … ``attn_out``, ``ffn_in``, ``ffn_out``) → path of that Linear inside the layer module."""
    return dict(family_of(encoder).roles)


def layer_norm_paths(encoder: nn.Module) -> tuple[str, str]:
    """Paths inside a layer of its residual LayerNorms: after the attention block, after the FFN."""
    return tuple(family_of(encoder).layer_norms)  # type: ignore[return-value]


def heads_problem(encoder: nn.Module) -> str | None:
    """Why this model's heads cannot be cut (None when they can): a table indexed by head that every layer shares
    (MPNet's relative attention bias) would have to lose the same heads in every layer."""
    family = family_of(encoder)
    if family.shared_head_table:
        return (f"{family.model_type} shares {family.shared_head_table} (one column per head) across all layers, so "
                f"heads cannot be cut per layer; cut FFN channels only (units='ffn', no heads_keep)")
    return None


UNIT_ROLES = {"ffn": (("ffn_in",), ("ffn_out",)), "heads": (("query", "key", "value"), ("attn_out",))}
"""Per compactable kind: the roles that write its channels (weight rows, bias) and those that read them (columns);
the same as :func:`icd.model.layout.dim_users` says for ``layer{i}.ffn`` / ``layer{i}.heads``."""


def users(encoder: nn.Module, layer: int, kind: str) -> tuple[list[str], list[str]]:
    """``(writers, readers)``: Linears (paths relative to the base model, from the model family) whose rows /
    columns are ``layer``'s ``kind`` (``ffn`` or ``heads``) channels."""
    paths = family_of(encoder).linears(layer)
    write, read = UNIT_ROLES[kind]
    return [paths[r] for r in write], [paths[r] for r in read]


def layer_sizes(encoder: nn.Module) -> list[LayerSize]:
    """Per layer: heads and intermediate size, read from the weights (the config may not say)."""
    base = bert_of(encoder)
    d = head_dim(encoder)
    sizes = []
    for layer in range(model_shape(encoder).layers):
        ffn_writers, _ = users(encoder, layer, "ffn")
        head_writers, _ = users(encoder, layer, "heads")
        heads = base.get_submodule(head_writers[0]).out_features // d
        sizes.append(LayerSize(heads=heads, intermediate=base.get_submodule(ffn_writers[0]).out_features))
    return sizes


def is_uniform(encoder: nn.Module) -> bool:
    """True when every layer has the config's head count and intermediate size (nothing was cut)."""
    shape = model_shape(encoder)
    return all(s == LayerSize(shape.heads, shape.intermediate) for s in layer_sizes(encoder))


def keep_rows_(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only the output channels ``index`` of ``linear`` (weight rows and bias), in place."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(0, index).clone())
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.index_select(0, index).clone())
    linear.out_features = int(index.numel())


def keep_columns_(linear: nn.Linear, index: torch.Tensor) -> None:
    """Keep only the input channels ``index`` of ``linear`` (weight columns), in place."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(1, index).clone())
    linear.in_features = int(index.numel())


def _keep(base: nn.Module, writers: Sequence[str], readers: Sequence[str], index: torch.Tensor) -> None:
    for name in writers:
        keep_rows_(base.get_submodule(name), index)
    for name in readers:
        keep_columns_(base.get_submodule(name), index)


def channel_index(index: Sequence[int] | torch.Tensor, size: int, what: str) -> torch.Tensor:
    """``index`` as a 1-D long tensor of distinct channels in ``range(size)``, in its order.

    Raises:
        ValueError: naming ``what``, when a channel repeats or lies outside the range.
    """
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size or index.unique().numel() != index.numel()):
        raise ValueError(f"{what} must be distinct indices in range({size}), got {index.tolist()}")
    return index


def _index(keep: Sequence[int] | torch.Tensor, size: int, what: str) -> torch.Tensor:
    index = channel_index(keep, size, f"{what}: keep")
    if index.numel() == 0:
        raise ValueError(f"{what}: at least one must be kept")
    return index


def keep_ffn_(encoder: nn.Module, layer: int, keep: Sequence[int] | torch.Tensor) -> None:
    """Keep only the FFN channels ``keep`` of ``layer`` (in that order), in place.

    Raises:
        ValueError: ``keep`` is empty, repeats a channel or names one the layer does not have.
    """
    base = bert_of(encoder)
    writers, readers = users(encoder, layer, "ffn")
    size = base.get_submodule(writers[0]).out_features
    _keep(base, writers, readers, _index(keep, size, f"layer {layer} FFN channels"))


def keep_heads_(encoder: nn.Module, layer: int, keep: Sequence[int] | torch.Tensor) -> None:
    """Keep only the attention heads ``keep`` of ``layer`` (in that order), in place; the attention module's head
    count follows.

    Raises:
        ValueError: ``keep`` is empty, repeats a head or names one the layer does not have.
    """
    base = bert_of(encoder)
    writers, readers = users(encoder, layer, "heads")
    d = head_dim(encoder)
    heads = base.get_submodule(writers[0]).out_features // d
    index = _index(keep, heads, f"layer {layer} attention heads")
    channels = (index.unsqueeze(1) * d + torch.arange(d).unsqueeze(0)).reshape(-1)
    _keep(base, writers, readers, channels)
    attention = base.get_submodule(writers[0].rpartition(".")[0])
    for attribute in HEAD_COUNT_ATTRIBUTES:
        if isinstance(getattr(attention, attribute, None), int):
            setattr(attention, attribute, int(index.numel()))
    if isinstance(getattr(attention, "all_head_size", None), int):
        attention.all_head_size = int(index.numel()) * d


def resize_(encoder: nn.Module, sizes: Sequence[LayerSize | dict[str, Any]]) -> None:
    """Give a freshly built model the per-layer shapes ``sizes`` (values are the first channels: they are about to
    be overwritten by a state dict).

    Raises:
        ValueError: ``sizes`` has the wrong number of layers or asks for more than the model has.
    """
    current = layer_sizes(encoder)
    if len(sizes) != len(current):
        raise ValueError(f"layer sizes: {len(sizes)} entries for a model with {len(current)} layers")
    for layer, (want, have) in enumerate(zip(sizes, current)):
        target = want if isinstance(want, LayerSize) else LayerSize(**want)
        if target.heads > have.heads or target.intermediate > have.intermediate:
            raise ValueError(f"layer sizes: layer {layer} asks for {target}, the model has {have}")
        if target.heads < have.heads:
            keep_heads_(encoder, layer, range(target.heads))
        if target.intermediate < have.intermediate:
            keep_ffn_(encoder, layer, range(target.intermediate))


def saved_sizes(encoder: nn.Module) -> list[dict[str, int]] | None:
    """What the model store records: per-layer sizes of a compacted model, None when nothing was cut."""
    return None if is_uniform(encoder) else [s.to_dict() for s in layer_sizes(encoder)]


def load_compacted(folder: Path, task: str, sizes: Sequence[dict[str, int]], error: type[Exception] = ValueError
                   ) -> nn.Module:
    """Build the Hugging Face model saved in ``folder`` (its family from ``config.json``) with the per-layer
    ``sizes`` it was saved with, then load its weights — every key, every shape — in eval mode.

    Raises:
        error: the sizes do not fit the saved config, or the weights do not load whole (one line).
    """
    import transformers
    from safetensors.torch import load_file

    from icd.model.loader import checkpoint_family

    folder = Path(folder)
    family = checkpoint_family(folder)
    classify = task == "sequence_classification"
    cls = getattr(transformers, family.classifier_class if classify else family.base_class)
    config = transformers.AutoConfig.from_pretrained(str(folder))
    model = cls(config) if classify else cls(config, **family.base_kwargs)
    try:
        resize_(model, sizes)
    except ValueError as exc:
        raise error(f"{folder}: layer_sizes do not fit the saved config: {exc}") from None
    result = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise error(f"{folder}: compacted weights do not load whole: missing {sorted(result.missing_keys)[:3]}, "
                    f"unexpected {sorted(result.unexpected_keys)[:3]}")
    return model.eval()
