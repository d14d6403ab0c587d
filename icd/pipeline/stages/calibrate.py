"""Stage 1, calibrate: stream held-in (calibration) text through the model and keep activation statistics."""

from __future__ import annotations

from icd.calibrate import calibrate
from icd.calibrate.stats import CalibrationStats
from icd.pipeline.context import RunContext
from icd.pipeline.events import StageEvent


def run_calibrate(ctx: RunContext, encoder, event: StageEvent) -> CalibrationStats:
    """Statistics of every Linear's input, the query/key outputs and the residual stream of ``encoder``."""
    data = ctx.cfg.data
    stats = calibrate(encoder, ctx.tokenizer, ctx.split.calibration, data.batch_size, ctx.cfg.model.max_length,
                      progress=ctx.progress)
    event.numbers.update(texts=len(ctx.split.calibration), tokens=int(stats.meta["tokens"]),
                         linears=len(stats.inputs))
    return stats
