"""``calibrate``: stream texts through the model and collect the statistics of every permutable dimension."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from icd.calibrate.collector import StatsCollector
from icd.calibrate.stats import CalibrationStats
from icd.model.families import family_of


def _batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    # Similar lengths together (less padding); a stable sort keeps the order deterministic.
    ordered = sorted(texts, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]calibrate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=True,
    )


@torch.no_grad()
def calibrate(
    encoder: nn.Module,
    tokenizer,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    progress: bool = True,
) -> CalibrationStats:
    """Run ``texts`` through ``encoder`` and return the streaming statistics of every Linear's input, the
    query / key outputs and the residual stream (see :class:`CalibrationStats`).

    Texts are batched shortest first (deterministic), tokenized with padding to the batch's longest and
    truncation to ``max_length``; only non-padding tokens are counted. The model is not changed (hooks are
    removed on exit, even on error).

    Args:
        encoder: an ``Encoder`` (BERT inside), in eval mode.
        tokenizer: its Hugging Face tokenizer.
        texts: calibration texts (never the held-out ones).
        batch_size: texts per forward.
        max_length: truncation length in tokens.
        progress: show a rich progress bar.

    Raises:
        ValueError: no texts, or a non-positive batch size / max length.
    """
    if not texts:
        raise ValueError("calibrate: texts is empty")
    if batch_size <= 0 or max_length <= 0:
        raise ValueError(f"calibrate: batch_size and max_length must be > 0, got {batch_size} and {max_length}")
    collector = StatsCollector(encoder)
    batches = _batches(texts, batch_size)
    tokens = 0
    start = time.perf_counter()
    collector.attach()
    try:
        with _progress(progress) as bar:
            task = bar.add_task("calibrate", total=len(batches))
            for batch in batches:
                encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                mask = encoded["attention_mask"]
                collector.begin_batch(mask)
                encoder(encoded["input_ids"], mask)
                collector.end_batch()
                tokens += int(mask.sum())
                bar.advance(task)
    finally:
        collector.detach()
    stats = collector.stats
    stats.meta = {
        "model_type": family_of(encoder).model_type,  # whose Linear names the statistics are keyed by
        "texts": len(texts),
        "tokens": tokens,
        "batch_size": batch_size,
        "max_length": max_length,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return stats
