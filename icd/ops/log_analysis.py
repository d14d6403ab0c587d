"""Statistics of one metric of ICD log records: per model, over time, with anomalies (robust z-score)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from icd.ops.logs import IcdRecord, ParsedLog

PERCENTILES = (50.0, 95.0, 99.0)
TIME_WINDOWS = 20
ANOMALY_Z = 5.0
"""|value − median| / (1.4826·MAD) above this marks an anomaly (per model)."""
_MAD_SCALE = 1.4826


@dataclass
class ModelSeries:
    model: str
    times: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    anomalies: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def summary(self) -> dict[str, float | int | str]:
        v = self.values
        row: dict[str, float | int | str] = {"model": self.model, "count": int(v.size), "mean": float(v.mean()),
                                             "min": float(v.min()), "max": float(v.max())}
        for p in PERCENTILES:
            row[f"p{p:g}"] = float(np.percentile(v, p))
        row["anomalies"] = int(self.anomalies.sum())
        return row


def mark_anomalies(values: np.ndarray, z: float = ANOMALY_Z) -> np.ndarray:
    """Boolean mask of values whose robust z-score exceeds ``z`` (MAD 0: any value off the median)."""
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * _MAD_SCALE
    if mad == 0.0:
        return values != median
    return np.abs(values - median) / mad > z


def series_by_model(parsed: ParsedLog, metric: str) -> tuple[dict[str, ModelSeries], int]:
    """Per-model series of ``metric``; also the number of records that lack it."""
    grouped: dict[str, list[IcdRecord]] = {}
    missing = 0
    for record in parsed.records:
        if record.value(metric) is None:
            missing += 1
        else:
            grouped.setdefault(record.model, []).append(record)
    out = {}
    for model, records in sorted(grouped.items()):
        series = ModelSeries(model, np.array([r.time for r in records]),
                             np.array([r.value(metric) for r in records], dtype=float),
                             np.array([r.line for r in records]))
        series.anomalies = mark_anomalies(series.values)
        out[model] = series
    return out, missing


def percentiles_over_time(series: ModelSeries, windows: int = TIME_WINDOWS) -> list[dict[str, float | int]]:
    """Percentiles of the metric in ``windows`` equal time windows (empty windows skipped)."""
    lo, hi = float(series.times.min()), float(series.times.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, windows + 1)
    index = np.clip(np.searchsorted(edges, series.times, side="right") - 1, 0, windows - 1)
    rows = []
    for w in range(windows):
        values = series.values[index == w]
        if values.size:
            row: dict[str, float | int] = {"start": float(edges[w]), "count": int(values.size)}
            for p in PERCENTILES:
                row[f"p{p:g}"] = float(np.percentile(values, p))
            rows.append(row)
    return rows
