"""Counters and the messages a worker sends to the coordinator (plain picklable dataclasses)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Request counts of one model over some span (an interval, the warm-up or the measured window)."""

    sent: int = 0
    ok: int = 0
    late: int = 0
    max_lag_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def add_error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.error_samples.setdefault(kind, detail)

    def note_lag(self, lag_s: float, late_s: float) -> None:
        if lag_s > late_s:
            self.late += 1
        if lag_s > self.max_lag_s:
            self.max_lag_s = lag_s

    def merge(self, other: Counters) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.late += other.late
        self.max_lag_s = max(self.max_lag_s, other.max_lag_s)
        self.errors.update(other.errors)
        for kind, detail in other.error_samples.items():
            self.error_samples.setdefault(kind, detail)


@dataclass
class ModelInterval:
    """One model's completions in one interval: counters (``sent`` by send time) and an encoded histogram."""

    counters: Counters
    hist: bytes
    target_rate: float | None = None


@dataclass
class IntervalMessage:
    worker: int
    index: int
    span_s: float
    models: dict[str, ModelInterval]


@dataclass
class ModelFinal:
    """One model's totals from one worker: measured window, warm-up, and what was left at the end."""

    measured: Counters
    hist: bytes
    warmup: Counters
    unsent_at_end: int = 0
    unfinished_at_end: int = 0


@dataclass
class FinalMessage:
    worker: int
    models: dict[str, ModelFinal]
    measured_start: float
    ended: float


@dataclass
class ReadyMessage:
    worker: int


@dataclass
class FailedMessage:
    worker: int
    error: str


@dataclass(frozen=True)
class RequestRecord:
    """One finished request, for ``on_request`` hooks (monotonic seconds)."""

    model: str
    intended: float
    sent: float
    done: float
    error_kind: str | None
    warmup: bool

    @property
    def latency_s(self) -> float:
        return self.done - self.intended
