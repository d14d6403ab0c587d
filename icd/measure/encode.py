"""Tokenize texts into batches and run them through an ``Encoder`` (inference only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Batch:
    """One tokenized batch: ``input_ids`` and ``attention_mask`` (int64, shape batch × tokens)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def tokens(self) -> int:
        """Number of real (non-padding) tokens."""
        return int(self.attention_mask.sum())


def _length_order(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: lengths[i])


def tokenize(
    tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int, sort_by_length: bool = False
) -> list[Batch]:
    """Split ``texts`` into batches padded to their longest text (at most ``max_length`` tokens).

    With ``sort_by_length`` texts of similar length share a batch (less padding); the order of texts then
    differs from the input order, so use :func:`encode` when the order matters.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if max_length <= 0:
        raise ValueError(f"max_length must be > 0, got {max_length}")
    order = _length_order(tokenizer, texts) if sort_by_length else list(range(len(texts)))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batches.append(Batch(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    return batches


def run_batches(encoder: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """The encoder's output for each batch (inference mode, fp32, detached)."""
    with torch.inference_mode():
        return [encoder(b.input_ids, b.attention_mask).float() for b in batches]


def encode(encoder: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 128) -> torch.Tensor:
    """Outputs of ``encoder`` for ``texts``, one row per text, in the order of ``texts``.

    Texts are batched by length (less padding, same result: padding is masked), then put back in order.
    """
    if not texts:
        raise ValueError("encode: no texts")
    order = _length_order(tokenizer, texts)
    sorted_texts = [texts[i] for i in order]
    outputs = torch.cat(run_batches(encoder, tokenize(tokenizer, sorted_texts, batch_size, max_length)))
    result = torch.empty_like(outputs)
    result[torch.tensor(order)] = outputs
    return result
