"""Latency histograms (HdrHistogram): bounded memory, exact merge across workers, percentiles in ms.

Values are recorded in integer microseconds from 1 µs to one hour with 3 significant digits, so any recorded
latency is kept to within 0.1 %. Every worker uses the same bounds, so :meth:`LatencyHistogram.merge` adds counts
bucket by bucket — the merged percentiles are exactly those of one histogram fed every sample.
"""

from __future__ import annotations

import functools

import numpy as np
from hdrh.histogram import HdrHistogram

from icd.defaults import REPORTED_PERCENTILES

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


@functools.lru_cache(maxsize=1)
def _bucket_values() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lowest, median and highest equivalent value (µs) of every counts-array index (hdrh's definitions)."""
    h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    values = [h.get_value_from_index(i) for i in range(h.counts_len)]
    lowest = np.array([h.get_lowest_equivalent_value(v) for v in values], dtype=np.float64)
    highest = np.array([h.get_highest_equivalent_value(v) for v in values], dtype=np.float64)
    # hdrh's median equivalent value: lowest + half the size (highest - lowest + 1) of the equivalence range
    median = lowest + np.floor((highest - lowest + 1) / 2)
    return lowest, median, highest


def percentile_key(pct: float) -> str:
    """JSON key of a percentile: ``50.0 → "p50"``, ``99.9 → "p99.9"``."""
    return f"p{pct:g}"


class LatencyHistogram:
    """An HDR histogram of latencies; record seconds, read milliseconds."""

    __slots__ = ("_h",)

    def __init__(self, hist: HdrHistogram | None = None) -> None:
        self._h = hist if hist is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_s(self, seconds: float) -> None:
        """Record one latency given in seconds (clamped to the histogram's range)."""
        us = int(seconds * 1e6)
        self._h.record_value(LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this histogram (exact: same bucket layout)."""
        if other.count:  # hdrh's add() of an empty histogram would reset the minimum to 0
            self._h.add(other._h)

    def reset(self) -> None:
        self._h.reset()

    def encode(self) -> bytes:
        """Compressed, base64 HDR encoding (a few hundred bytes), for sending between processes."""
        return self._h.encode()

    @classmethod
    def decode(cls, data: bytes) -> LatencyHistogram:
        return cls(HdrHistogram.decode(data))

    def _counts(self) -> np.ndarray:
        return np.ctypeslib.as_array(self._h.counts).astype(np.int64)

    def _percentiles_us(self, counts: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
        # Same definition as HdrHistogram.get_value_at_percentile, vectorised (hdrh iterates 23k buckets in Python).
        lowest, _, highest = _bucket_values()
        cum = np.cumsum(counts)
        total = int(cum[-1])
        out = []
        for pct in percentiles:
            target = max(int(min(pct, 100.0) * total / 100 + 0.5), 1)
            idx = int(np.searchsorted(cum, target))
            out.append(float(highest[idx] if pct else lowest[idx]))
        return out

    def percentile_ms(self, pct: float) -> float | None:
        return self.percentiles_ms((pct,))[0]

    def percentiles_ms(self, percentiles: tuple[float, ...]) -> list[float | None]:
        """Several percentiles (ms) in one vectorised pass (``None`` each when empty)."""
        if self.count == 0:
            return [None] * len(percentiles)
        return [round(v / 1000.0, 3) for v in self._percentiles_us(self._counts(), percentiles)]

    def summary_ms(self, percentiles: tuple[float, ...] = REPORTED_PERCENTILES) -> dict[str, float | None]:
        """``{"mean","min","max","stdev","p50",...}`` in milliseconds; values are ``None`` when empty."""
        if self.count == 0:
            keys = ["mean", *(percentile_key(p) for p in percentiles), "min", "max", "stdev"]
            return dict.fromkeys(keys)
        counts = self._counts()
        _, median, _ = _bucket_values()
        total = counts.sum()
        mean = float((counts * median).sum() / total)
        stdev = float(np.sqrt((counts * (median - mean) ** 2).sum() / total))
        out: dict[str, float | None] = {"mean": round(mean / 1000.0, 3)}
        for pct, value in zip(percentiles, self._percentiles_us(counts, percentiles)):
            out[percentile_key(pct)] = round(value / 1000.0, 3)
        out["min"] = round(self._h.get_min_value() / 1000.0, 3)
        out["max"] = round(self._h.get_max_value() / 1000.0, 3)
        out["stdev"] = round(stdev / 1000.0, 3)
        return out
