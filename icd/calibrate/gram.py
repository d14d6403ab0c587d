"""Input Grams (``Σ x xᵀ`` over non-padding tokens) of a few Linears, as the least-squares transforms use them.

Collected by the one :class:`~icd.calibrate.collector.StatsCollector` (restricted to the Linears asked for, the
forward stopped once the last of them has its input), or read from a full :class:`CalibrationStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from icd.calibrate.collector import StatsCollector, StopForward
from icd.calibrate.stats import CalibrationStats, ChannelStats
from icd.measure.encode import Batch


@dataclass
class InputGram:
    """Σ x xᵀ over the non-padding tokens a Linear has seen (float64) and the token count."""

    gram: torch.Tensor
    count: int = 0

    @classmethod
    def of(cls, channel: ChannelStats) -> InputGram:
        """The Gram and count of a :class:`ChannelStats` (shares its memory)."""
        return cls(torch.as_tensor(channel.gram, dtype=torch.float64), int(channel.count))

    @property
    def hessian(self) -> torch.Tensor:
        """Mean ``x xᵀ`` (the layer-wise Hessian up to a factor 2)."""
        return self.gram / max(self.count, 1)

    @property
    def input_norms(self) -> torch.Tensor:
        """‖x_j‖ per input channel over all tokens (what Wanda multiplies ``|W|`` by)."""
        return self.gram.diagonal().clamp(min=0).sqrt()


def collect_grams(
    encoder: nn.Module, names: Sequence[str], batches: Sequence[Batch], stop_early: bool = True
) -> dict[str, InputGram]:
    """Run ``batches`` through ``encoder`` and accumulate each named Linear's input Gram (padding excluded).

    Args:
        encoder: the model, as it is now.
        names: Linear names (as in ``encoder.bert.named_modules()``), in forward order.
        batches: tokenized calibration batches.
        stop_early: stop each forward once the last named Linear has its input.
    """
    collector = StatsCollector(encoder, linears=names, stop_after=names[-1] if stop_early else None)
    collector.attach()
    try:
        with torch.inference_mode():
            for batch in batches:
                collector.begin_batch(batch.attention_mask)
                try:
                    encoder(batch.input_ids, batch.attention_mask)
                except StopForward:
                    pass
                collector.end_batch()
    finally:
        collector.detach()
    inputs = collector.stats.inputs
    return {name: InputGram.of(inputs[name]) if name in inputs else _empty(encoder, name) for name in names}


def _empty(encoder: nn.Module, name: str) -> InputGram:
    from icd.model.layout import bert_of

    linear = bert_of(encoder).get_submodule(name)
    return InputGram(torch.zeros(linear.in_features, linear.in_features, dtype=torch.float64))


def grams_from_stats(stats: CalibrationStats | dict | None, names: Sequence[str]) -> dict[str, InputGram] | None:
    """Per-Linear Grams from a :class:`CalibrationStats` (its ``inputs`` table), when it has them all.

    The statistics must describe the model as it is now (taken after any permutation was folded in).
    """
    layers = getattr(stats, "inputs", stats)
    out = {}
    for name in names:
        entry = layers.get(name) if isinstance(layers, dict) else None
        gram = getattr(entry, "gram", None)
        if gram is None:
            return None
        out[name] = InputGram(torch.as_tensor(gram, dtype=torch.float64), int(getattr(entry, "count", 1)))
    return out
