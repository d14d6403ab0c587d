"""What one measurement of ``icd tune`` holds, and what a configuration's measurements add up to.

A :class:`LoadPoint` is one closed-loop load run of one configuration at one concurrency (or the record that the
configuration could not be measured: Triton refused it, or the server died). Its figures are typed records
(:class:`icd.measure.metrics.Measurement`: value, unit, higher-is-better, how measured). A
:class:`ConfigResult` gathers a configuration's points; its *best* point is the highest throughput that meets the
latency SLO, its *closest* point (when none meets it) the one with the lowest latency at that percentile. A level
measured more than once (the search re-measures its winner) counts as its measurements combined
(:func:`combine`): the mean throughput, the worst latency and error rate, so a repeat that breaks the SLO refutes
the level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from icd.measure.metrics import Measurement
from icd.tune.space import Candidate

THROUGHPUT = "throughput_rps"
ERROR_RATE = "error_rate"
SLO_PERCENTILES = (50, 95, 99)


class PointStatus(str, Enum):
    """Outcome of one measurement."""

    OK = "ok"
    """The load ran; the records hold its figures."""
    REJECTED = "rejected"
    """Triton refused to load the configuration (its reason is in ``detail``); nothing was measured."""
    SERVER_DIED = "server_died"
    """The server went away while loading the configuration or under its load."""
    FAILED = "failed"
    """The server stayed up but the model stopped serving under this configuration's load."""


def latency_tag(percentile: int) -> str:
    """Record tag of the client-side latency percentile (``served_latency_p99_ms``)."""
    return f"served_latency_p{percentile}_ms"


@dataclass(frozen=True)
class Slo:
    """A latency objective: ``percentile`` of client-side latency at most ``latency_ms``, and no errors."""

    latency_ms: float
    percentile: int = 99

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise ValueError(f"SLO latency must be > 0 ms, got {self.latency_ms}")
        if self.percentile not in SLO_PERCENTILES:
            raise ValueError(f"SLO percentile must be one of {SLO_PERCENTILES}, got {self.percentile}")

    @property
    def tag(self) -> str:
        return latency_tag(self.percentile)

    def describe(self) -> str:
        return f"p{self.percentile} <= {self.latency_ms:g} ms, no errors"


@dataclass
class LoadPoint:
    """One measurement (see module docstring).

    Attributes:
        candidate: the configuration.
        concurrency: closed-loop clients (None when the configuration was not measured).
        status: outcome.
        records: figures by tag (throughput, latency percentiles, error rate).
        requests: requests completed in the measured window (ok + failed).
        errors: failed requests.
        detail: Triton's reason, the error samples, or what happened to the server.
        measured_at: UTC time (ISO 8601).
        load_average: the host's 1-minute load average at the end of the measurement.
    """

    candidate: Candidate
    concurrency: int | None
    status: PointStatus
    records: dict[str, Measurement] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    detail: str = ""
    measured_at: str = ""
    load_average: float | None = None

    @property
    def config_id(self) -> str:
        return self.candidate.config_id

    def value(self, tag: str) -> float | None:
        record = self.records.get(tag)
        return record.value if record is not None and record.measured else None

    @property
    def throughput(self) -> float:
        return self.value(THROUGHPUT) or 0.0

    def meets(self, slo: Slo) -> bool:
        """Measured, error-free, some throughput, and the SLO percentile within the limit."""
        latency = self.value(slo.tag)
        return (self.status == PointStatus.OK and self.errors == 0 and self.throughput > 0
                and latency is not None and latency <= slo.latency_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "config_id": self.config_id, "candidate": self.candidate.to_dict(), "concurrency": self.concurrency,
            "status": self.status.value, "records": [r.to_json() for r in self.records.values()],
            "requests": self.requests, "errors": self.errors, "detail": self.detail,
            "measured_at": self.measured_at, "load_average": self.load_average,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LoadPoint:
        records = [Measurement.from_json(r) for r in obj.get("records", [])]
        return cls(candidate=Candidate.from_dict(obj["candidate"]), concurrency=obj.get("concurrency"),
                   status=PointStatus(obj["status"]), records={r.tag: r for r in records},
                   requests=int(obj.get("requests", 0)), errors=int(obj.get("errors", 0)),
                   detail=str(obj.get("detail", "")), measured_at=str(obj.get("measured_at", "")),
                   load_average=obj.get("load_average"))


@dataclass
class ConfigResult:
    """A configuration's measurements, in the order they were taken."""

    candidate: Candidate
    points: list[LoadPoint] = field(default_factory=list)

    @property
    def config_id(self) -> str:
        return self.candidate.config_id

    @property
    def failure(self) -> LoadPoint | None:
        """The point saying why the configuration could not be measured (rejected / server died), if any."""
        return next((p for p in self.points if p.status != PointStatus.OK), None)

    def best(self, slo: Slo) -> LoadPoint | None:
        """The highest-throughput level that meets ``slo`` (its measurements combined; None when none does)."""
        meeting = [p for p in self.levels() if p.meets(slo)]
        return max(meeting, key=lambda p: p.throughput) if meeting else None

    def levels(self) -> list[LoadPoint]:
        """One point per measured level (:func:`combine` of its measurements), in first-measured order."""
        by_level: dict[int, list[LoadPoint]] = {}
        for point in self.points:
            if point.concurrency is not None:
                by_level.setdefault(point.concurrency, []).append(point)
        return [combine(points) for points in by_level.values()]

    def times_measured(self, concurrency: int | None) -> int:
        """How many measurements the configuration has at ``concurrency``."""
        return sum(1 for p in self.points if p.concurrency == concurrency)

    def closest(self, slo: Slo) -> LoadPoint | None:
        """The measured point with the lowest latency at the SLO percentile (for "nothing meets the SLO")."""
        measured = [p for p in self.levels() if p.status == PointStatus.OK and p.value(slo.tag) is not None]
        return min(measured, key=lambda p: (p.errors > 0, p.value(slo.tag), -p.throughput)) if measured else None


def combine(points: list[LoadPoint]) -> LoadPoint:
    """Measurements of one configuration at one level as one point: throughput the mean, latency percentiles and
    error rate the worst, requests and errors summed, a failed run's status (it refutes the level), the last
    measurement's time and load average."""
    if len(points) == 1:
        return points[0]
    last = points[-1]
    records: dict[str, Measurement] = {}
    for tag in dict.fromkeys(tag for p in points for tag in p.records):
        how = next(p.records[tag].how for p in points if tag in p.records)
        values = [p.value(tag) for p in points]
        if any(v is None for v in values):
            records[tag] = Measurement(tag, None, f"{how}; not measured in every one of {len(points)} runs")
            continue
        if tag == THROUGHPUT:
            value, what = sum(values) / len(values), f"mean of {len(points)} measurements"
        else:
            value, what = max(values), f"worst of {len(points)} measurements"
        records[tag] = Measurement(tag, value, f"{how}; {what}")
    failed = next((p for p in points if p.status != PointStatus.OK), None)
    return LoadPoint(last.candidate, last.concurrency, last.status if failed is None else failed.status, records,
                     requests=sum(p.requests for p in points), errors=sum(p.errors for p in points),
                     detail=last.detail if failed is None else failed.detail, measured_at=last.measured_at,
                     load_average=last.load_average)
