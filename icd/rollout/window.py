"""What one side of a comparison did in a time window: requests, errors, p95 — computed in one place.

The canary analysis (router log), the blue-green watch (the target colour's requests), the shadow checks and the
A/B report all summarise a window of requests through :func:`side_stats`, so "p95" and "error rate" mean the same
everywhere.

Example:
    s = side_stats(latencies_s=[0.010, 0.012, 0.020], errors=[False, False, True])
    s.error_rate, s.p95_ms      # (0.333..., 19.2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

P95 = 95.0


@dataclass(frozen=True)
class SideStats:
    """Requests of one side (variant, colour or shadow role) in a window."""

    n: int
    errors: int
    p95_ms: float | None
    """p95 of the successful requests' latency (``None`` without any)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.n if self.n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate if self.n else None}


def side_stats(latencies_s: Sequence[float] | np.ndarray, errors: Sequence[bool] | np.ndarray) -> SideStats:
    """Summarise one side: ``latencies_s`` and ``errors`` per request (same order)."""
    lat = np.asarray(latencies_s, dtype=float)
    err = np.asarray(errors, dtype=bool)
    if lat.shape != err.shape:
        raise ValueError(f"latencies ({lat.shape}) and errors ({err.shape}) differ in length")
    ok = lat[~err]
    return SideStats(int(lat.size), int(err.sum()), float(np.percentile(ok, P95)) * 1e3 if ok.size else None)


def relative_increase_pct(candidate: float, reference: float) -> float:
    """``100 · (candidate / reference − 1)``; raises ``ZeroDivisionError`` for a zero reference."""
    if reference <= 0:
        raise ZeroDivisionError(f"reference {reference} is not positive")
    return 100.0 * (candidate / reference - 1.0)
