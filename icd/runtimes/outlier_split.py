"""Outliers in fp32 branches of their own, so a static int8 quantizer (one activation range per tensor) keeps
them out of its ranges. Two function-preserving splits, both made at export, both LLM.int8()'s outlier rule
(the widest calibration ranges):

**FFN neurons** (:func:`split_ffn_neurons_`). The FFN output Linear's input range is set by the few neurons whose
activation output is largest; every other neuron then gets a coarse grid. Moving those neurons to the end of the
FFN (a permutation: ffn_in's rows and ffn_out's columns) and cutting the weights there makes two branches without
touching an activation tensor — no gather, no slice::

    ffn_in.main(x) → act → ffn_out.main ─┐
    ffn_in.tail(x) → act → ffn_out.tail ─┴─ + → (ffn_out's bias in main)

The ``.tail`` Linears (``count`` rows / columns) stay fp32; ``ffn_out.main`` gets int8 with the narrower range of
the kept neurons. The writer hands its branch to the reader through an attribute (the tracer follows the tensor),
so the split model is exported, never served from torch.

**Input channels** (:func:`split_input_channels_`). A Linear reading the residual stream (query / key / value,
ffn_in: LayerNorm outputs) sees a few hidden channels far wider than the rest. ``y = W x`` becomes
``main(x ⊙ m) + tail(x[c])``: the mask ``m`` zeroes the channels ``c`` before the int8 product (a pointwise
multiply the quantizer's own op absorbs), and a ``len(c)``-column fp32 Linear adds them back from a gather of those
few channels. ``main``'s columns ``c`` are zero too, so they widen neither the activation nor the weight ranges.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from icd.calibrate.collector import input_absmax
from icd.model.families import family_of
from icd.model.layout import bert_of, model_shape
from icd.transforms.compact_slice import channel_index, keep_columns_, keep_rows_


def activation_of(encoder: nn.Module) -> nn.Module:
    """The FFN's activation (``hidden_act``; DistilBERT: ``activation``) as transformers builds it."""
    from transformers.activations import get_activation

    config = bert_of(encoder).config
    name = getattr(config, "hidden_act", None) or getattr(config, "activation", None)
    if not isinstance(name, str):
        raise ValueError(f"{config.model_type}: the config names no FFN activation (hidden_act / activation)")
    return get_activation(name)


class FfnWriter(nn.Module):
    """ffn_in split by rows: returns the kept neurons' pre-activation, keeps the tail's activation for the reader."""

    def __init__(self, linear: nn.Linear, tail: torch.Tensor, activation: nn.Module):
        super().__init__()
        keep = _complement(tail, linear.out_features)
        self.main, self.tail, self.activation = _rows(linear, keep), _rows(linear, tail), activation
        self.branch: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.branch = self.activation(self.tail(x))
        return self.main(x)


class FfnReader(nn.Module):
    """ffn_out split by columns: the kept neurons through ``main`` (with the bias), the writer's tail through
    ``tail`` (no bias), summed."""

    def __init__(self, linear: nn.Linear, tail: torch.Tensor, writer: FfnWriter):
        super().__init__()
        keep = _complement(tail, linear.in_features)
        self.main, self.tail = _columns(linear, keep, bias=True), _columns(linear, tail, bias=False)
        self._writer = [writer]  # a plain list: the writer is registered once, under ffn_in's path

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        branch = self._writer[0].branch
        if branch is None:
            raise RuntimeError("FfnReader: its FfnWriter has not run (the split FFN runs writer, then reader)")
        return self.main(h) + self.tail(branch)


def widest_ffn_neurons(encoder: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                       count: int) -> dict[int, torch.Tensor]:
    """Per layer, the ``count`` FFN neurons with the widest range (max |ffn_out input|) over ``batches``
    (``{"input_ids", "attention_mask"}``), sorted."""
    family, base = family_of(encoder), bert_of(encoder)
    readers = {layer: base.get_submodule(family.linears(layer)["ffn_out"])
               for layer in range(model_shape(encoder).layers)}
    return _widest(encoder, readers, batches, count)


def _widest(encoder: nn.Module, modules: Mapping, batches: Iterable[Mapping[str, torch.Tensor]],
            count: int) -> dict:
    """Per key of ``modules``, the ``count`` input channels of that module with the widest max |x| over every row
    (padding included: what the int8 range sees), sorted."""
    pairs = ((batch["input_ids"], batch["attention_mask"]) for batch in batches)
    widest = input_absmax(encoder, modules, pairs, padded_rows=True)
    if not widest:
        raise ValueError("outlier split: no calibration batch")
    return {key: torch.topk(seen, min(count, seen.numel())).indices.sort().values for key, seen in widest.items()}


def split_ffn_neurons_(encoder: nn.Module, neurons: Mapping[int, torch.Tensor]) -> list[str]:
    """Split ``neurons[layer]`` of each listed layer into their own branch, in place; returns the paths (relative
    to the base model) of the branch's Linears (``<ffn_in>.tail``, ``<ffn_out>.tail``) for the quantizer to leave
    in fp32.

    Raises:
        ValueError: a layer's neurons are empty, repeated, out of range or all of its neurons.
    """
    family, base = family_of(encoder), bert_of(encoder)
    activation = activation_of(encoder)
    tails = []
    for layer, index in sorted(neurons.items()):
        paths = family.linears(layer)
        writer_linear, reader_linear = base.get_submodule(paths["ffn_in"]), base.get_submodule(paths["ffn_out"])
        tail = _checked(index, writer_linear.out_features, f"layer {layer}", "FFN neurons")
        writer = FfnWriter(writer_linear, tail, activation)
        base.set_submodule(paths["ffn_in"], writer)
        base.set_submodule(paths["ffn_out"], FfnReader(reader_linear, tail, writer))
        tails += [f"{paths['ffn_in']}.tail", f"{paths['ffn_out']}.tail"]
    return tails


def split_ffn_outliers_(encoder: nn.Module, neurons: Mapping[int, torch.Tensor]) -> list[str]:
    """:func:`split_ffn_neurons_` for what :func:`widest_ffn_neurons` found, where a layer may be no wider than the
    count asked for (a compacted model): a layer whose listed neurons are all of its FFN is not split — its FFN
    output Linear stays fp32 whole (its path is returned with the branches'), its FFN input goes to int8 as in an
    unsplit model. Returns the Linears to leave fp32, in layer order."""
    family, base = family_of(encoder), bert_of(encoder)
    fp32: list[str] = []
    for layer, index in sorted(neurons.items()):
        paths = family.linears(layer)
        if index.numel() >= base.get_submodule(paths["ffn_in"]).out_features:
            fp32.append(paths["ffn_out"])
        else:
            fp32 += split_ffn_neurons_(encoder, {layer: index})
    return fp32


class InputSplitLinear(nn.Module):
    """``main(x ⊙ mask) + tail(x[..., channels])``: the Linear with its input channels ``channels`` in fp32."""

    def __init__(self, linear: nn.Linear, channels: torch.Tensor):
        super().__init__()
        mask = torch.ones(linear.in_features)
        mask[channels] = 0.0
        self.register_buffer("mask", mask)
        self.register_buffer("channels", channels.clone())
        self.main = copy.deepcopy(linear)
        with torch.no_grad():
            self.main.weight.mul_(mask)
        self.tail = _columns(linear, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x * self.mask) + self.tail(x.index_select(-1, self.channels))


RESIDUAL_READERS = ("query", "key", "value", "ffn_in")
"""Roles of the Linears whose input is the residual stream (a LayerNorm output)."""


def residual_readers(encoder: nn.Module, roles: Iterable[str] = RESIDUAL_READERS) -> list[str]:
    """Paths (relative to the base model) of the Linears of ``roles`` (some of :data:`RESIDUAL_READERS`), layer by
    layer; where the FFN neurons were split, ffn_in's int8 part (``<ffn_in>.main``).

    Raises:
        ValueError: a role does not read the residual stream.
    """
    unknown = sorted(set(roles) - set(RESIDUAL_READERS))
    if unknown:
        raise ValueError(f"input channels split only for {RESIDUAL_READERS}, not {unknown}")
    family, base = family_of(encoder), bert_of(encoder)
    paths = []
    for layer in range(model_shape(encoder).layers):
        for role in (r for r in RESIDUAL_READERS if r in roles):
            path = family.linears(layer)[role]
            paths.append(f"{path}.main" if isinstance(base.get_submodule(path), FfnWriter) else path)
    return paths


def widest_input_channels(encoder: nn.Module, paths: Iterable[str], batches: Iterable[Mapping[str, torch.Tensor]],
                          count: int) -> dict[str, torch.Tensor]:
    """Per Linear path (relative to the base model), the ``count`` input channels with the widest range (max |x|)
    over ``batches``, sorted."""
    base = bert_of(encoder)
    return _widest(encoder, {path: base.get_submodule(path) for path in paths}, batches, count)


def split_input_channels_(encoder: nn.Module, channels: Mapping[str, torch.Tensor]) -> list[str]:
    """Give each Linear (path relative to the base model) its ``channels`` as an fp32 branch
    (:class:`InputSplitLinear`), in place; returns the paths of the branches (``<path>.tail``).

    Raises:
        ValueError: a path is not a Linear, or its channels are empty, repeated, out of range or all of them.
    """
    base = bert_of(encoder)
    tails = []
    for path, index in sorted(channels.items()):
        linear = base.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{path}: input channels split only from a Linear, found {type(linear).__name__}")
        base.set_submodule(path, InputSplitLinear(linear, _checked(index, linear.in_features, path, "input channels")))
        tails.append(f"{path}.tail")
    return tails


def _checked(index: torch.Tensor, size: int, where: str, what: str) -> torch.Tensor:
    tail = channel_index(index, size, f"{where}: {what} to split")
    if tail.numel() == 0 or tail.numel() >= size:
        raise ValueError(f"{where}: split {tail.numel()} of {size} {what} (needs 1 to {size - 1})")
    return tail.sort().values


def _complement(tail: torch.Tensor, size: int) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[tail] = False
    return torch.nonzero(keep).flatten()


def _rows(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    part = copy.deepcopy(linear)
    keep_rows_(part, index)
    return part


def _columns(linear: nn.Linear, index: torch.Tensor, bias: bool) -> nn.Linear:
    part = copy.deepcopy(linear)
    keep_columns_(part, index)
    if not bias:
        part.bias = None
    return part
