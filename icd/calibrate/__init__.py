"""Streaming activation statistics of a BERT encoder (per-Linear input Gram, abs-max, second moments; the
residual stream; query / key outputs). See :func:`calibrate`."""

from __future__ import annotations

from icd.calibrate.run import calibrate
from icd.calibrate.stats import CalibrationStats, ChannelStats

__all__ = ["CalibrationStats", "ChannelStats", "calibrate"]
