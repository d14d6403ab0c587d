"""In-process latency of one ``Encoder`` forward: fixed torch threads, inference mode, after warm-up.

This is the single latency harness of icd (the pipeline, benches and reports use it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from icd.measure.metrics import Measurement

DEFAULT_VOCAB = 30522


@dataclass(frozen=True)
class Workload:
    """Real batches (``input_ids``, ``attention_mask``) that one model runs once per timed round, as its server
    would run them (e.g. each batch's trailing padding trimmed); its time per round is the mean per batch."""

    batches: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    how: str

    def __post_init__(self) -> None:
        if not self.batches:
            raise ValueError("Workload: no batches")

    @property
    def mean_tokens_run(self) -> float:
        """Columns run per row, averaged over the batches' rows."""
        rows = sum(int(ids.shape[0]) for ids, _ in self.batches)
        return sum(int(ids.shape[0]) * int(ids.shape[1]) for ids, _ in self.batches) / rows


@dataclass(frozen=True)
class Latency:
    """Median / p95 wall time of ``runs`` timed forwards of a ``batch_size × seq_len`` batch (with a
    :class:`Workload`: of one of its batches, on average; ``tokens_run``: the columns it ran per row)."""

    median_ms: float
    p95_ms: float
    runs: int
    threads: int
    batch_size: int
    seq_len: int
    how: str
    samples_ms: tuple[float, ...] = ()
    tokens_run: float | None = None

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        return out

    def measurements(self) -> list[Measurement]:
        return [
            Measurement("latency_median_ms", self.median_ms, self.how),
            Measurement("latency_p95_ms", self.p95_ms, self.how),
        ]


def _vocab_size(encoder: nn.Module) -> int:
    bert = getattr(encoder, "bert", None)
    config = getattr(bert, "config", None)
    return int(getattr(config, "vocab_size", DEFAULT_VOCAB))


def synthetic_batch(encoder: nn.Module, batch_size: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random token ids (no padding) of the given shape, for timing only."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, _vocab_size(encoder), (batch_size, seq_len), generator=generator)
    return ids, torch.ones_like(ids)


def measure_latency(
    encoder: nn.Module,
    batch_size: int = 8,
    seq_len: int = 128,
    warmup: int = 3,
    runs: int = 10,
    threads: int = 2,
    seed: int = 0,
) -> Latency:
    """Time ``runs`` forwards after ``warmup`` untimed ones, with ``threads`` torch threads.

    The previous torch thread count is restored afterwards. Raises ValueError for non-positive sizes.
    """
    return measure_latency_interleaved({"model": encoder}, batch_size, seq_len, warmup, runs, threads, seed)["model"]


def _check_sizes(batch_size: int, seq_len: int, warmup: int, runs: int, threads: int) -> None:
    for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 1), ("runs", runs, 1),
                             ("threads", threads, 1), ("warmup", warmup, 0)):
        if value < low:
            raise ValueError(f"measure_latency: {name} must be >= {low}, got {value}")


def _time_once(encoder: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Milliseconds per batch of one pass over ``batches``."""
    start = time.perf_counter()
    for ids, mask in batches:
        encoder(ids, mask)
    return (time.perf_counter() - start) * 1000.0 / len(batches)


def measure_latency_interleaved(
    encoders: dict[str, nn.Module],
    batch_size: int = 8,
    seq_len: int = 128,
    warmup: int = 3,
    runs: int = 10,
    threads: int = 2,
    seed: int = 0,
    workloads: Mapping[str, Workload] | None = None,
) -> dict[str, Latency]:
    """Time several models in rounds (each round runs every model once, in an order shuffled per round from
    ``seed``), so that a change in machine load during the measurement affects all of them alike and no model
    always runs right after the same one; same threads and warm-up for each. ``samples_ms[i]`` of every
    model is round ``i``: :func:`paired_ratio` compares two models round by round.

    Inputs: one seeded random ``batch_size × seq_len`` batch for every model, or with ``workloads`` (one per model)
    each model's own real batches, every one of them once per round (a sample is the mean time per batch); give
    every model the same workload to compare them.

    With one model this is :func:`measure_latency`. The previous torch thread count is restored afterwards.
    """
    _check_sizes(batch_size, seq_len, warmup, runs, threads)
    if not encoders:
        raise ValueError("measure_latency_interleaved: no models")
    if workloads is not None and set(workloads) != set(encoders):
        raise ValueError(f"measure_latency_interleaved: workloads for {sorted(workloads)}, models {sorted(encoders)}")
    first = next(iter(encoders.values()))
    synthetic = (synthetic_batch(first, batch_size, seq_len, seed),)
    inputs = {name: workloads[name].batches if workloads else synthetic for name in encoders}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    samples: dict[str, list[float]] = {name: [] for name in encoders}
    order, rng = list(encoders), random.Random(seed)
    try:
        with torch.inference_mode():
            for name, encoder in encoders.items():
                for _ in range(warmup):
                    _time_once(encoder, inputs[name])
            for _ in range(runs):
                rng.shuffle(order)
                for name in order:
                    samples[name].append(_time_once(encoders[name], inputs[name]))
    finally:
        torch.set_num_threads(previous)
    def how(name: str) -> str:
        what = workloads[name].how if workloads else f"batch {batch_size}x{seq_len} random token ids"
        return (f"in-process forward, torch.inference_mode, {threads} threads, {what}, {warmup} warm-up + {runs} "
                "timed runs (perf_counter)"
                + (f", interleaved: {len(encoders)} models, each once per round in a shuffled order"
                   if len(encoders) > 1 else ""))

    return {
        name: Latency(
            median_ms=float(np.median(values)),
            p95_ms=float(np.percentile(values, 95)),
            runs=runs,
            threads=threads,
            batch_size=batch_size,
            seq_len=seq_len,
            how=how(name),
            samples_ms=tuple(values),
            tokens_run=workloads[name].mean_tokens_run if workloads else float(seq_len),
        )
        for name, values in samples.items()
    }


@dataclass(frozen=True)
class PairedRatio:
    """``a`` / ``b`` latency, round by round: the median of the per-round ratios and its bootstrap interval."""

    median: float
    low: float
    high: float
    confidence: float
    rounds: int

    def to_dict(self) -> dict[str, object]:
        return {"median": self.median, f"ci{round(self.confidence * 100)}": [self.low, self.high],
                "rounds": self.rounds, "how": "median of per-round latency ratios (same round of one interleaved "
                                              "run), percentile bootstrap interval (scipy.stats.bootstrap, seed 0)"}


def ratio_text(ratio: Mapping[str, Any] | None) -> str:
    """A :meth:`PairedRatio.to_dict` as ``0.962 (0.940-0.981)`` (median, 95 % interval); empty for None."""
    if not ratio:
        return ""
    low, high = ratio["ci95"]
    return f"{ratio['median']:.3f} ({low:.3f}-{high:.3f})"


def paired_ratio(a_ms: Sequence[float], b_ms: Sequence[float], confidence: float = 0.95) -> PairedRatio:
    """How much slower ``a`` is than ``b`` (< 1: faster), from the samples of one interleaved run.

    Each round timed both under the same machine load, so the per-round ratio cancels what a loaded, shared
    machine adds to both; below 1 with ``high`` < 1 means faster beyond this run's noise. The interval is this
    run's: another run of the same models can land outside it (measured: docs/int8.md), so compare within a run.

    Raises:
        ValueError: the sample lists differ in length, are empty or hold a non-positive time.
    """
    from scipy.stats import bootstrap

    a, b = np.asarray(a_ms, dtype=float), np.asarray(b_ms, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_ratio: needs two equally long sample lists of one run, got {a.size} and {b.size}")
    if (a <= 0).any() or (b <= 0).any():
        raise ValueError("paired_ratio: latency samples must be > 0 ms")
    ratios = a / b
    median = float(np.median(ratios))
    if ratios.size < 2 or np.all(ratios == ratios[0]):
        return PairedRatio(median, median, median, confidence, int(ratios.size))
    ci = bootstrap((ratios,), np.median, confidence_level=confidence, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return PairedRatio(median, float(ci.low), float(ci.high), confidence, int(ratios.size))
