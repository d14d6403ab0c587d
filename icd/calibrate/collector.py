"""Forward hooks that fold each batch's activations into running :class:`ChannelStats` (nothing is stored).

* a forward *pre*-hook on every ``nn.Linear`` → statistics of its input;
* a forward hook on query and key → statistics of their output (the ``qk`` dims);
* a forward hook on every residual-stream LayerNorm (embeddings, after attention, after the FFN; where each
  lives is the model family's, :mod:`icd.model.families`) →
  the ``hidden`` statistics.

Only non-padding tokens count: the current batch's attention mask selects the rows of every (batch, tokens,
channels) activation. Activations of another shape (pooler, classifier: one vector per sequence) count every
row. Q, K and V read the same tensor, which is also a LayerNorm output: its statistics are computed once per
batch and added to each reader.

:func:`input_range` is the light collector: per input channel (min, max) of a few modules (real tokens, or every
row a per-call int8 kernel sees), and the encoder's outputs of the same forward; :func:`input_absmax` is its max |x|.

This is icd's one Gram collector: :func:`icd.calibrate.gram.collect_grams` (the input Grams a transform needs for
a few Linears, with the forward stopped once the last of them has its input) runs it with ``linears`` set.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from icd.calibrate.stats import CalibrationStats, ChannelStats
from icd.model.families import family_of
from icd.model.layout import bert_of, bert_shape

_CACHE_SIZE = 4  # a LayerNorm output, then Q in, Q out, K in, K out, V in: reuse across them


@dataclass
class _Batch:
    mask: torch.Tensor | None = None
    cache: list[tuple[torch.Tensor, ChannelStats]] = field(default_factory=list)


def real_token_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of an activation that count: ``x[mask]`` for a (batch, tokens, channels) activation of the batch
    whose attention ``mask`` (bool) is given, else every row (pooler, classifier: one vector per sequence)."""
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask]
    return x.reshape(-1, x.shape[-1])


def input_range(
    encoder: nn.Module, modules: Mapping[Hashable, nn.Module], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    padded_rows: bool = False, outputs: list[torch.Tensor] | None = None,
) -> dict[Hashable, tuple[torch.Tensor, torch.Tensor]]:
    """Per key of ``modules``, the per input channel (min, max) of that module's input over ``batches``
    (``(input_ids, attention_mask)`` pairs, run through ``encoder``): over the non-padding tokens, or with
    ``padded_rows`` over every row the model computed, padding included (what a per-call int8 kernel's range sees).
    A module that saw no row has no key. With ``outputs`` the encoder's fp32 output of each batch is appended to it:
    the same forward gives the model's reference.
    """
    low: dict[Hashable, torch.Tensor] = {}
    high: dict[Hashable, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook_for(key: Hashable) -> Callable:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            x = inputs[0].detach()
            rows = x.reshape(-1, x.shape[-1]) if padded_rows else real_token_rows(x, mask[0])
            if rows.shape[0] == 0:
                return
            seen_low, seen_high = rows.amin(dim=0), rows.amax(dim=0)
            low[key] = torch.minimum(low[key], seen_low) if key in low else seen_low
            high[key] = torch.maximum(high[key], seen_high) if key in high else seen_high

        return hook

    handles = [module.register_forward_hook(hook_for(key)) for key, module in modules.items()]
    try:
        with torch.inference_mode():
            for input_ids, attention_mask in batches:
                mask[:] = [attention_mask.bool()]
                out = encoder(input_ids, attention_mask)
                if outputs is not None:
                    outputs.append(out.float())
    finally:
        for handle in handles:
            handle.remove()
    return {key: (low[key], high[key]) for key in low}


def input_absmax(
    encoder: nn.Module, modules: Mapping[Hashable, nn.Module], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    padded_rows: bool = False, outputs: list[torch.Tensor] | None = None,
) -> dict[Hashable, torch.Tensor]:
    """Per key of ``modules``, the per input channel max |x| of that module over ``batches``: :func:`input_range`'s
    ``max(-min, max)``, with the same arguments. Over real tokens it is the same figure as :attr:`ChannelStats.absmax`
    of a calibration."""
    return {key: torch.maximum(-low, high)
            for key, (low, high) in input_range(encoder, modules, batches, padded_rows, outputs).items()}


class StopForward(Exception):
    """Raised by the input hook of ``stop_after`` once it has its input: the rest of the forward is not needed."""


class StatsCollector:
    """Attach with :meth:`attach`, run forwards between :meth:`begin_batch` and :meth:`end_batch`, then
    :meth:`detach` and read :attr:`stats`.

    Args:
        encoder: the model (an ``Encoder`` or a BERT model).
        linears: only these Linears' inputs (names as in :attr:`CalibrationStats.inputs`), and then neither the
            query / key outputs nor the residual stream; None = everything.
        stop_after: raise :class:`StopForward` from this Linear's input hook (after accumulating it).
    """

    def __init__(self, encoder: nn.Module, linears: Sequence[str] | None = None, stop_after: str | None = None) -> None:
        self.encoder = encoder
        self.stats = CalibrationStats(inputs={}, outputs={}, hidden=ChannelStats.zeros(bert_shape(encoder).hidden))
        self.linears = None if linears is None else list(linears)
        self.stop_after = stop_after
        self._batch = _Batch()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    # -- hooks -------------------------------------------------------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        return real_token_rows(x, self._batch.mask)

    def _delta(self, x: torch.Tensor) -> ChannelStats:
        for seen, delta in self._batch.cache:
            if seen is x:
                return delta
        delta = ChannelStats.zeros(x.shape[-1])
        delta.update(self._rows(x))
        self._batch.cache = [*self._batch.cache[-(_CACHE_SIZE - 1) :], (x, delta)]
        return delta

    def _accumulate(self, table: dict[str, ChannelStats], name: str, x: torch.Tensor) -> None:
        delta = self._delta(x)
        if name not in table:
            table[name] = ChannelStats.zeros(delta.size)
        table[name].add(delta)

    def _input_hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> None:
            self._accumulate(self.stats.inputs, name, args[0])
            if name == self.stop_after:
                raise StopForward

        return hook

    def _output_hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            self._accumulate(self.stats.outputs, name, output)

        return hook

    def _hidden_hook(self, _module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        self.stats.hidden.add(self._delta(output))

    # -- life cycle --------------------------------------------------------------------------------------------
    def attach(self) -> None:
        bert = bert_of(self.encoder)
        hf = getattr(self.encoder, "hf", bert)
        named = dict(bert.named_modules())
        inside = {id(module) for module in named.values()}
        outside = {name: module for name, module in hf.named_modules() if id(module) not in inside}
        wanted = None if self.linears is None else set(self.linears)
        for name, module in [*named.items(), *outside.items()]:
            if isinstance(module, nn.Linear) and name and (wanted is None or name in wanted):
                self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        if wanted is not None:
            return
        shape, family = bert_shape(self.encoder), family_of(self.encoder)
        for layer in range(shape.layers):
            roles = family.linears(layer)
            for role in ("query", "key"):
                self._handles.append(named[roles[role]].register_forward_hook(self._output_hook(roles[role])))
        norms = [bert.get_submodule(name) for name in family.residual_norms(shape.layers)]
        for norm in norms:
            self._handles.append(norm.register_forward_hook(self._hidden_hook))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin_batch(self, attention_mask: torch.Tensor) -> None:
        self._batch = _Batch(mask=attention_mask.bool())

    def end_batch(self) -> None:
        self._batch = _Batch()
