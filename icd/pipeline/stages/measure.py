"""Stage 7, measure: fidelity against the dense model on held-out text, and in-process latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from icd.measure.encode import encode
from icd.measure.fidelity import Fidelity, fidelity
from icd.measure.latency import Latency, measure_latency
from icd.measure.metrics import Measurement
from icd.model.encoder import Encoder
from icd.pipeline.context import RunContext


@dataclass
class VariantMetrics:
    """What one variant (dense, linear, iterative candidate) measured."""

    name: str
    fidelity: Fidelity
    latency: Latency | None

    def speedup_over(self, dense: VariantMetrics) -> float | None:
        if self.latency is None or dense.latency is None:
            return None
        return dense.latency.median_ms / self.latency.median_ms

    def measurements(self, dense: VariantMetrics | None = None) -> list[Measurement]:
        out = self.fidelity.measurements("held-out docstrings (data.sources) vs the dense fp32 model")
        if self.latency is not None:
            out += self.latency.measurements()
            if dense is not None and dense.latency is not None:
                out.append(Measurement("speedup", self.speedup_over(dense),
                                       "dense median latency / this median latency, same harness and threads"))
        return out

    def row(self, dense: VariantMetrics | None = None) -> dict[str, Any]:
        """A flat table row (report, pair table, summary)."""
        row: dict[str, Any] = {"variant": self.name, **{k: v for k, v in self.fidelity.to_dict().items() if k != "count"}}
        row["latency_median_ms"] = None if self.latency is None else self.latency.median_ms
        row["latency_p95_ms"] = None if self.latency is None else self.latency.p95_ms
        row["speedup"] = None if dense is None else self.speedup_over(dense)
        return row


def reference_outputs(ctx: RunContext, encoder: Encoder) -> torch.Tensor:
    """The dense model's outputs on the held-out texts (what every variant is compared with)."""
    return encode(encoder, ctx.tokenizer, ctx.split.heldout, ctx.cfg.data.batch_size, ctx.cfg.model.max_length)


def measure_variant(ctx: RunContext, name: str, encoder: Encoder, reference: torch.Tensor,
                    with_latency: bool = True, outputs: torch.Tensor | None = None) -> VariantMetrics:
    """Fidelity of ``encoder`` against ``reference`` on the held-out texts, and its latency.

    ``outputs``: the encoder's held-out outputs when they were just computed by the same code (the dense model,
    whose outputs are the reference): not encoded a second time.
    """
    if outputs is None:
        outputs = encode(encoder, ctx.tokenizer, ctx.split.heldout, ctx.cfg.data.batch_size, ctx.cfg.model.max_length)
    fid = fidelity(reference, outputs, encoder.task)
    lat = None
    if with_latency:
        spec = ctx.cfg.measure.latency
        lat = measure_latency(encoder, batch_size=spec.batch_size, seq_len=min(spec.seq_len, ctx.cfg.model.max_length),
                              warmup=spec.warmup, runs=spec.runs, threads=spec.threads)
    return VariantMetrics(name, fid, lat)
