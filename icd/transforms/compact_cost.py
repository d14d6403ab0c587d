"""What an encoder layer costs per attention head and per FFN channel: FLOPs, or latency measured here.

Per token, at sequence length ``L``, hidden ``H`` and head size ``d``, one layer with ``h`` heads and ``k`` FFN
channels does ``h · (8·H·d + 4·L·d) + 4·H·k`` multiply-adds ×2 (FLOPs): Q, K, V and the attention output
(``2·H·d`` each per head), the scores and the weighted sum (``2·L·d`` each per head), the FFN's two Linears
(``2·H`` each per channel). LayerNorms, softmax and activations are left out (a few percent).

The measured model times one real layer (batch × ``L`` tokens, the run's threads) at its full size, with half its
heads and with half its FFN channels, and fits ``fixed + a·h + b·k`` through the three medians.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from icd.calibrate.replay import capture_layer_calls, run_layer
from icd.measure.encode import Batch
from icd.model.layout import bert_of
from icd.transforms.compact_slice import LayerSize, encoder_layers, head_dim, keep_ffn_, keep_heads_, layer_sizes


@dataclass(frozen=True)
class UnitCosts:
    """Cost of one layer: ``fixed + head · heads + channel · ffn channels`` (``unit``: ``flops`` per token, or
    ``ms`` per batch of the measured shape)."""

    fixed: float
    head: float
    channel: float
    unit: str
    how: str

    def layer(self, size: LayerSize) -> float:
        return self.fixed + self.head * size.heads + self.channel * size.intermediate

    def model(self, sizes: Sequence[LayerSize]) -> float:
        return float(sum(self.layer(s) for s in sizes))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def flops_costs(encoder: nn.Module, seq_len: int) -> UnitCosts:
    """FLOPs per token of one layer (see the module docstring)."""
    hidden = int(bert_of(encoder).config.hidden_size)
    d = head_dim(encoder)
    return UnitCosts(
        fixed=0.0, head=float(2 * (4 * hidden * d + 2 * seq_len * d)), channel=float(2 * 2 * hidden), unit="flops",
        how=f"multiply-adds x2 per token at sequence length {seq_len} (Linears, attention scores and sum)",
    )


def _time_ms(layer: nn.Module, call, hidden: torch.Tensor) -> float:
    start = time.perf_counter()
    run_layer(layer, call, hidden)
    return (time.perf_counter() - start) * 1000.0


def measured_costs(
    encoder: nn.Module, seq_len: int, batch_size: int = 8, threads: int = 2, runs: int = 7, layer: int = 0
) -> UnitCosts:
    """Latency of ``layer`` at its size, with half its heads and with half its FFN channels (interleaved rounds,
    ``threads`` torch threads), fitted as ``fixed + a·heads + b·channels`` ms per batch of ``batch_size ×
    seq_len`` random tokens."""
    size = layer_sizes(encoder)[layer]
    variants = {"full": copy.deepcopy(encoder)}
    if size.heads > 1:
        variants["heads"] = copy.deepcopy(encoder)
        keep_heads_(variants["heads"], layer, range(size.heads // 2))
    if size.intermediate > 1:
        variants["ffn"] = copy.deepcopy(encoder)
        keep_ffn_(variants["ffn"], layer, range(size.intermediate // 2))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, int(bert_of(encoder).config.vocab_size), (batch_size, seq_len), generator=generator)
    batch = Batch(ids, torch.ones_like(ids))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layers = {name: encoder_layers(model)[layer] for name, model in variants.items()}
        calls = {name: capture_layer_calls(model, layers[name], [batch])[0] for name, model in variants.items()}
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for name in variants:
            _time_ms(layers[name], calls[name], calls[name].hidden)  # warm-up
        for _ in range(runs):
            for name in variants:
                samples[name].append(_time_ms(layers[name], calls[name], calls[name].hidden))
    finally:
        torch.set_num_threads(previous)
    full = float(np.median(samples["full"]))
    per_head = (full - float(np.median(samples["heads"]))) / (size.heads - size.heads // 2) if "heads" in samples else 0.0
    per_channel = ((full - float(np.median(samples["ffn"]))) / (size.intermediate - size.intermediate // 2)
                   if "ffn" in samples else 0.0)
    per_head, per_channel = max(per_head, 0.0), max(per_channel, 0.0)
    fixed = max(full - per_head * size.heads - per_channel * size.intermediate, 0.0)
    return UnitCosts(
        fixed=fixed, head=per_head, channel=per_channel, unit="ms",
        how=f"layer {layer} timed at full size, half heads, half FFN ({runs} interleaved rounds, {threads} threads, "
            f"batch {batch_size}x{seq_len}); median ms per batch fitted as fixed + per head + per channel",
    )
