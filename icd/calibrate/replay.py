"""Layer replay: capture how each calibration batch enters encoder layer 0, then run one layer at a time on
cached hidden states, reading any sub-module's input (and the residual its output is added to) on the way.

This is what sequential, layer-wise reconstruction runs on (N:M sparsity, compaction): :func:`replay_layers`
hands out the encoder layers in order; only the layer being processed runs; its inputs come from the
already-transformed layers before it (``hidden``) and, with error feedback, the inputs of a dense copy run
alongside (``dense_hidden``). :func:`linear_stats` turns one Linear's inputs in both models into the sums a
least-squares re-fit needs (:mod:`icd.transforms.refit`).

Example:
    >>> for index, layer, dense_layer, replay in replay_layers(encoder, layers, batches, feedback=True):
    ...     stats = replay.stats(layer, dense_layer, "output.dense", residual=True)  # doctest: +SKIP
    ...     # change ``layer`` in place; the next layer then sees its outputs
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from icd.calibrate.collector import StopForward
from icd.calibrate.gram import InputGram
from icd.measure.encode import Batch


@dataclass
class LayerCall:
    """How one batch enters an encoder layer: hidden states plus the other arguments the model passed."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict
    token_mask: torch.Tensor


def capture_layer_calls(encoder: nn.Module, layer: nn.Module, batches: Sequence[Batch]) -> list[LayerCall]:
    """Run each batch up to ``layer`` and keep its input hidden states and arguments (the forward stops there)."""
    calls: list[LayerCall] = []
    current: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(LayerCall(args[0], tuple(args[1:]), dict(kwargs), current[0].bool()))
        raise StopForward

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            for batch in batches:
                current[:] = [batch.attention_mask]
                try:
                    encoder(batch.input_ids, batch.attention_mask)
                except StopForward:
                    pass
    finally:
        handle.remove()
    return calls


def run_layer(layer: nn.Module, call: LayerCall, hidden: torch.Tensor) -> torch.Tensor:
    """``layer``'s output hidden states for one batch whose input hidden states are ``hidden``."""
    with torch.inference_mode():
        out = layer(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, tuple) else out


def residual_parent(layer: nn.Module, module_name: str) -> nn.Module | None:
    """The ``…Output`` block around ``module_name`` when it computes ``LayerNorm(dense(h) + input_tensor)``."""
    parent_name, _, leaf = module_name.rpartition(".")
    if leaf != "dense" or not parent_name:
        return None
    parent = layer.get_submodule(parent_name)
    return parent if isinstance(getattr(parent, "LayerNorm", None), nn.LayerNorm) else None


def linear_io(
    layer: nn.Module, module_name: str, call: LayerCall, hidden: torch.Tensor, residual: bool,
    residual_from: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Input tokens (non-padding rows, float64) of ``layer``'s sub-module ``module_name`` for one batch and, with
    ``residual``, the residual its output is added to: the input of the sub-module ``residual_from`` (``""``: the
    layer's own input), or, when that is None, what :func:`residual_parent` is called with."""
    captured: dict[str, torch.Tensor] = {}
    parent = residual_parent(layer, module_name) if residual and residual_from is None else None
    if residual and residual_from == "":
        captured["residual"] = hidden

    def source_hook(_module: nn.Module, args: tuple) -> None:
        captured["residual"] = args[0]

    def parent_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["residual"] = args[1] if len(args) > 1 else kwargs["input_tensor"]

    def hook(_module: nn.Module, args: tuple) -> None:
        captured["input"] = args[0]
        raise StopForward

    handles = [layer.get_submodule(module_name).register_forward_pre_hook(hook)]
    if parent is not None:
        handles.append(parent.register_forward_pre_hook(parent_hook, with_kwargs=True))
    if residual and residual_from:
        handles.append(layer.get_submodule(residual_from).register_forward_pre_hook(source_hook))
    try:
        run_layer(layer, call, hidden)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    res = captured.get("residual")
    return captured["input"][call.token_mask].double(), None if res is None else res[call.token_mask].double()


def linear_input(layer: nn.Module, module_name: str, call: LayerCall, hidden: torch.Tensor) -> torch.Tensor:
    """Input tokens (non-padding rows, float64) of ``layer``'s sub-module ``module_name`` for one batch."""
    return linear_io(layer, module_name, call, hidden, residual=False)[0]


@dataclass
class LinearStats:
    """Sums over the calibration tokens of one Linear's inputs in the transformed model (``x̂``, ``k̂`` features)
    and, with error feedback, in the dense model (``x``, ``k`` features; ``k̂ = k`` unless channels were cut)."""

    gram: InputGram  # X̂ᵀX̂ (k̂ × k̂) and the token count
    cross: torch.Tensor | None = None  # X̂ᵀ X (k̂ × k), only with error feedback
    dense_gram: torch.Tensor | None = None  # Xᵀ X (k × k), only with error feedback
    sum_hat: torch.Tensor | None = None  # Σ x̂ over tokens (for bias correction)
    sum_dense: torch.Tensor | None = None  # Σ x, only with error feedback
    cross_resid: torch.Tensor | None = None  # X̂ᵀ (R − R̂) (k̂ × out), only with residual feedback
    sum_resid: torch.Tensor | None = None  # Σ (R − R̂) over tokens (out), only with residual feedback
    dense_energy: float | None = None  # Σ ‖x Wᵀ‖² of the dense Linear, when asked instead of dense_gram


def restricted(stats: LinearStats, columns: torch.Tensor) -> LinearStats:
    """``stats`` of the same Linear when its transformed-model inputs keep only ``columns`` (sub-blocks: cutting
    input channels that nothing upstream mixes — whole heads, FFN channels — leaves the kept ones as they were)."""
    index = torch.as_tensor(columns, dtype=torch.long)
    gram = InputGram(stats.gram.gram.index_select(0, index).index_select(1, index), stats.gram.count)
    pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
    return LinearStats(gram, pick(stats.cross), stats.dense_gram, pick(stats.sum_hat), stats.sum_dense,
                       pick(stats.cross_resid), stats.sum_resid, stats.dense_energy)


def linear_stats(
    layer: nn.Module, dense_layer: nn.Module | None, module_name: str, calls: Sequence[LayerCall],
    hidden: Sequence[torch.Tensor], dense_hidden: Sequence[torch.Tensor] | None, residual: bool = False,
    residual_from: str | None = None, dense_weight: torch.Tensor | None = None,
) -> LinearStats:
    """Replay ``layer`` (and ``dense_layer``) on every batch and sum what a re-fit of ``module_name`` needs.

    Args:
        layer: the layer being transformed; ``hidden[k]`` is its input for batch ``k``.
        dense_layer: the dense layer and ``dense_hidden`` its inputs (error feedback), or None.
        module_name: the Linear, relative to the layer (``output.dense``).
        calls: from :func:`capture_layer_calls`.
        residual: also sum ``X̂ᵀ(R − R̂)`` when the Linear feeds ``LayerNorm(dense(h) + residual)``.
        residual_from: where that residual is: the input of this sub-module of the layer (``""``: the layer's own
            input); None: found by :func:`residual_parent` (BERT's ``…Output`` blocks).
        dense_weight: with a dense layer, sum the dense Linear's output energy ``Σ‖xWᵀ‖²`` with these weights
            instead of the ``k × k`` Gram of its inputs (all an output-error report needs of them, far cheaper).
    """
    linear = layer.get_submodule(module_name)
    in_hat = linear.in_features
    in_dense = in_hat if dense_layer is None else dense_layer.get_submodule(module_name).in_features
    residual = residual and dense_layer is not None and (
        residual_from is not None or residual_parent(layer, module_name) is not None)
    cross_resid = torch.zeros(in_hat, linear.out_features, dtype=torch.float64) if residual else None
    sum_resid = torch.zeros(linear.out_features, dtype=torch.float64) if residual else None
    gram = InputGram(torch.zeros(in_hat, in_hat, dtype=torch.float64))
    cross = None if dense_layer is None else torch.zeros(in_hat, in_dense, dtype=torch.float64)
    dense_gram = None if dense_layer is None else torch.zeros(in_dense, in_dense, dtype=torch.float64)
    dense_energy = None
    if dense_layer is not None and dense_weight is not None:
        dense_gram, dense_energy = None, 0.0
        projection = dense_weight.detach().double().T
    sum_hat = torch.zeros(in_hat, dtype=torch.float64)
    sum_dense = None if dense_layer is None else torch.zeros(in_dense, dtype=torch.float64)
    for k, call in enumerate(calls):
        x_hat, r_hat = linear_io(layer, module_name, call, hidden[k], residual, residual_from)
        gram.gram += x_hat.T @ x_hat
        gram.count += x_hat.shape[0]
        sum_hat += x_hat.sum(dim=0)
        if cross is not None and dense_layer is not None and dense_hidden is not None:
            x, r = linear_io(dense_layer, module_name, call, dense_hidden[k], residual, residual_from)
            if cross_resid is not None and sum_resid is not None and r is not None and r_hat is not None:
                cross_resid += x_hat.T @ (r - r_hat)
                sum_resid += (r - r_hat).sum(dim=0)
            cross += x_hat.T @ x
            if dense_gram is not None:
                dense_gram += x.T @ x
            else:
                dense_energy = (dense_energy or 0.0) + float((x @ projection).pow(2).sum())
            sum_dense += x.sum(dim=0)  # type: ignore[operator]
    return LinearStats(gram, cross, dense_gram, sum_hat, sum_dense, cross_resid, sum_resid, dense_energy)


@dataclass
class LayerReplay:
    """The cached inputs of the layer being processed: ``hidden`` (transformed model) and ``dense_hidden`` (dense
    model, with error feedback; else None), one tensor per calibration batch."""

    calls: list[LayerCall]
    hidden: list[torch.Tensor]
    dense_hidden: list[torch.Tensor] | None

    def stats(self, layer: nn.Module, dense_layer: nn.Module | None, module_name: str,
              residual: bool = False, residual_from: str | None = None,
              dense_weight: torch.Tensor | None = None) -> LinearStats:
        """:func:`linear_stats` of ``module_name`` on the cached inputs."""
        return linear_stats(layer, dense_layer, module_name, self.calls, self.hidden, self.dense_hidden, residual,
                            residual_from, dense_weight)

    def advance(self, layer: nn.Module, dense_layer: nn.Module | None) -> None:
        """Replace the cached inputs by the outputs of ``layer`` (and ``dense_layer``): the next layer's inputs."""
        self.hidden = [run_layer(layer, c, h) for c, h in zip(self.calls, self.hidden)]
        if dense_layer is not None and self.dense_hidden is not None:
            self.dense_hidden = [run_layer(dense_layer, c, h) for c, h in zip(self.calls, self.dense_hidden)]


def replay_layers(
    encoder: nn.Module, layers: Sequence[nn.Module], batches: Sequence[Batch], feedback: bool, last: int | None = None,
) -> Iterator[tuple[int, nn.Module, nn.Module | None, LayerReplay]]:
    """Yield ``(index, layer, dense_layer, replay)`` for layers ``0 … last`` in order.

    ``dense_layer`` is a copy of ``layer`` taken before the caller changes it (None without ``feedback``). When the
    caller's loop body returns, the cached inputs move through the (changed) layer and its dense copy.
    """
    calls = capture_layer_calls(encoder, layers[0], batches)
    hidden = [c.hidden for c in calls]
    replay = LayerReplay(calls, hidden, list(hidden) if feedback else None)
    stop = len(layers) - 1 if last is None else last
    for index in range(stop + 1):
        layer = layers[index]
        dense_layer = copy.deepcopy(layer) if feedback else None
        yield index, layer, dense_layer, replay
        replay.advance(layer, dense_layer)


def module_inputs(layer: nn.Module, names: Sequence[str], call: LayerCall, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs (non-padding rows, float64) of several sub-modules of ``layer`` for one batch, in one run of it."""
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            captured[name] = args[0]

        return hook

    handles = [layer.get_submodule(name).register_forward_pre_hook(make_hook(name)) for name in names]
    try:
        run_layer(layer, call, hidden)
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name][call.token_mask].double() for name in names}
