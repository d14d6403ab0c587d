"""Traffic patterns as load shapes: one :meth:`LoadShape.tick` returns the target arrival rate (requests/s) at
``run_time`` seconds, or ``None`` when the shape is finished (Locust's ``LoadTestShape``).

Each model of a simulation gets its own shape instance, fed its own completed intervals through
:meth:`LoadShape.observe` (only ``stress`` uses them).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum

import numpy as np

from icd.errors import UserError
from icd.load.aggregate import IntervalRow
from icd.load.histogram import LatencyHistogram

BURST_FACTOR = 4.0
BURST_PERIOD_FRACTION = 0.2
BURST_LENGTH_FRACTION = 0.25
REALISTIC_FLOOR = 0.08
STRESS_GROWTH = 1.5
STRESS_STEP_S = 10.0
STRESS_SLO_P95_MS = 250.0
STRESS_MAX_ERROR_RATE = 0.01
STRESS_MIN_ACHIEVED = 0.5

# Share of the peak rate by hour of a business day (0h..23h): quiet night, morning ramp, lunch dip, evening decline.
BUSINESS_DAY = (0.15, 0.10, 0.08, 0.07, 0.08, 0.12, 0.25, 0.45, 0.70, 0.90, 1.00, 0.95,
                0.75, 0.85, 0.95, 1.00, 0.90, 0.70, 0.50, 0.40, 0.35, 0.30, 0.25, 0.20)


class TrafficPattern(str, Enum):
    """The simulation's traffic patterns."""

    CONSTANT = "constant"
    """A steady rate."""
    BURSTY = "bursty"
    """A base rate with periodic spikes of ``burst_factor`` × the base."""
    REALISTIC = "realistic"
    """A business-day curve (24 h compressed into the duration) with Poisson arrivals."""
    STRESS = "stress"
    """A geometric ramp until p95 exceeds the SLO, errors exceed their budget, or the rate is not sustained."""


class LoadShape(ABC):
    """A load shape: the target rate over time."""

    duration_s: float

    @abstractmethod
    def tick(self, run_time: float) -> float | None:
        """Target arrival rate at ``run_time`` seconds, or ``None`` to stop."""

    def observe(self, row: IntervalRow) -> None:  # noqa: B027 - optional hook
        """A completed interval of this shape's model (used by feedback shapes)."""


@dataclass
class ConstantShape(LoadShape):
    rate: float
    duration_s: float

    def tick(self, run_time: float) -> float | None:
        return None if run_time >= self.duration_s else self.rate


@dataclass
class BurstyShape(LoadShape):
    """``base_rate``, except ``burst_s`` seconds at ``burst_rate`` starting every ``period_s`` (first at half a period)."""

    base_rate: float
    burst_rate: float
    period_s: float
    burst_s: float
    duration_s: float

    def tick(self, run_time: float) -> float | None:
        if run_time >= self.duration_s:
            return None
        phase = (run_time - self.period_s / 2) % self.period_s
        return self.burst_rate if run_time >= self.period_s / 2 and phase < self.burst_s else self.base_rate


@dataclass
class RealisticShape(LoadShape):
    """The :data:`BUSINESS_DAY` curve, scaled to ``peak_rate``, 24 h compressed into ``duration_s``."""

    peak_rate: float
    duration_s: float

    def tick(self, run_time: float) -> float | None:
        if run_time >= self.duration_s:
            return None
        hour = 24.0 * run_time / self.duration_s
        curve = np.interp(hour, np.arange(25), [*BUSINESS_DAY, BUSINESS_DAY[0]])
        return float(self.peak_rate * max(REALISTIC_FLOOR, curve))


@dataclass
class StressStep:
    """One rung of the stress ramp, as measured."""

    target_rate: float
    start_s: float
    ok_rps: float
    p95_ms: float | None
    error_rate: float
    passed: bool
    reason: str = ""


class StressShape(LoadShape):
    """Rates ``start_rate × growth^k``, ``step_s`` each, until a step breaks the SLO; reports the best passing step."""

    def __init__(self, start_rate: float, duration_s: float, growth: float = STRESS_GROWTH,
                 step_s: float = STRESS_STEP_S, slo_p95_ms: float = STRESS_SLO_P95_MS,
                 max_error_rate: float = STRESS_MAX_ERROR_RATE) -> None:
        if start_rate <= 0 or growth <= 1.0 or step_s <= 0 or slo_p95_ms <= 0:
            raise ValueError(f"stress shape: bad start_rate={start_rate} growth={growth} step_s={step_s} slo={slo_p95_ms}")
        self.start_rate = start_rate
        self.duration_s = duration_s
        self.growth = growth
        self.step_s = step_s
        self.slo_p95_ms = slo_p95_ms
        self.max_error_rate = max_error_rate
        self.steps: list[StressStep] = []
        self.broken = False
        self._rows: dict[int, list[IntervalRow]] = {}

    def rate_of_step(self, k: int) -> float:
        return self.start_rate * self.growth**k

    def tick(self, run_time: float) -> float | None:
        if self.broken or run_time >= self.duration_s:
            return None
        return self.rate_of_step(int(run_time // self.step_s))

    def observe(self, row: IntervalRow) -> None:
        if row.warmup or self.broken:
            return
        k = int(math.floor((row.t_s - 1e-6) / self.step_s))
        self._rows.setdefault(k, []).append(row)
        step_end = (k + 1) * self.step_s
        if row.t_s >= step_end - 1e-6 and len(self.steps) == k:
            self._judge(k)

    def _judge(self, k: int) -> None:
        rows = self._rows.pop(k, [])
        hist = LatencyHistogram()
        ok = errors = 0
        span = 0.0
        for r in rows:
            ok += r.ok
            errors += r.errors
            span += r.span_s
            if r.hist is not None:
                hist.merge(r.hist)
        target = self.rate_of_step(k)
        ok_rps = ok / span if span else 0.0
        p95 = hist.percentile_ms(95.0)
        err_rate = errors / (ok + errors) if ok + errors else 0.0
        reason = ""
        if p95 is None:
            reason = f"no request answered during the step ({ok + errors} finished)"
        elif p95 > self.slo_p95_ms:
            reason = f"p95 {p95} ms > SLO {self.slo_p95_ms} ms"
        elif err_rate > self.max_error_rate:
            reason = f"error rate {err_rate:.3%} > {self.max_error_rate:.1%}"
        elif ok_rps < STRESS_MIN_ACHIEVED * target:
            reason = f"achieved {ok_rps:.1f}/s < {STRESS_MIN_ACHIEVED:.0%} of target {target:.1f}/s"
        self.steps.append(StressStep(round(target, 3), k * self.step_s, round(ok_rps, 3),
                                     p95, round(err_rate, 6), not reason, reason))
        if reason:
            self.broken = True

    def result(self) -> dict[str, object]:
        """Highest rate sustained within the SLO (target and achieved), and every step's evidence."""
        passed = [s for s in self.steps if s.passed]
        best = max(passed, key=lambda s: s.target_rate) if passed else None
        return {
            "slo_p95_ms": self.slo_p95_ms,
            "max_error_rate": self.max_error_rate,
            "max_rate_within_slo_rps": None if best is None else best.target_rate,
            "achieved_rps_at_max": None if best is None else best.ok_rps,
            "broke": self.broken,
            "break_reason": next((s.reason for s in self.steps if not s.passed), None),
            "steps": [s.__dict__ for s in self.steps],
        }


def make_shape(pattern: str | TrafficPattern, rate: float, duration_s: float, *, slo_p95_ms: float = STRESS_SLO_P95_MS,
               step_s: float | None = None, growth: float = STRESS_GROWTH, burst_factor: float = BURST_FACTOR) -> LoadShape:
    """The shape for a pattern name. ``rate``: constant/bursty base, realistic peak, stress start.

    Raises:
        UserError: unknown pattern name or a non-positive rate / duration.
    """
    try:
        pat = TrafficPattern(pattern)
    except ValueError:
        names = ", ".join(p.value for p in TrafficPattern)
        raise UserError(f"--traffic-pattern {pattern!r}: unknown; choose one of {names}") from None
    if not (math.isfinite(rate) and rate > 0 and math.isfinite(duration_s) and duration_s > 0):
        raise UserError(f"--rate {rate} / --duration {duration_s}: both must be finite and > 0")
    if not (math.isfinite(slo_p95_ms) and slo_p95_ms > 0):
        raise UserError(f"--slo-p95-ms {slo_p95_ms}: must be finite and > 0")
    if step_s is not None and not (math.isfinite(step_s) and step_s > 0):
        raise UserError(f"--step {step_s}: must be finite and > 0 (seconds per stress step)")
    if pat == TrafficPattern.CONSTANT:
        return ConstantShape(rate, duration_s)
    if pat == TrafficPattern.BURSTY:
        period = max(2.0, duration_s * BURST_PERIOD_FRACTION)
        return BurstyShape(rate, rate * burst_factor, period, max(1.0, period * BURST_LENGTH_FRACTION), duration_s)
    if pat == TrafficPattern.REALISTIC:
        return RealisticShape(rate, duration_s)
    step = step_s if step_s is not None else min(STRESS_STEP_S, max(2.0, duration_s / 6))
    return StressShape(rate, duration_s, growth=growth, step_s=step, slo_p95_ms=slo_p95_ms)
