"""The guide's KPI table ("Production Monitoring") evaluated on live Prometheus data — ``icd status``.

Each KPI is one row: what is measured (a PromQL expression over the shipped recording rules, one sample per
model / GPU), its threshold, and the action when breached. A KPI with no sample (or only NaN samples, e.g. an
error ratio with no traffic, or GPU series on a CPU-only host) is :attr:`KpiState.NO_DATA` — neither OK nor a
breach. When several samples exist (several models or GPUs) the row shows the worst one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from icd.monitor.client import PrometheusClient, Sample
from icd.monitor.rules import RuleSet


class KpiState(str, Enum):
    """State of one KPI."""

    OK = "ok"
    """Every sample meets the threshold."""
    BREACHED = "breached"
    """At least one sample violates the threshold."""
    NO_DATA = "no data"
    """No finite sample: the series does not exist (yet) here; not a pass, not a failure."""


class Bound(str, Enum):
    """Which side of the threshold is healthy."""

    AT_MOST = "at_most"
    """Healthy when value <= high (breached above, like the alert's ``> high``)."""
    AT_LEAST = "at_least"
    """Healthy when value >= low (breached below)."""
    WITHIN = "within"
    """Healthy when low <= value <= high."""


@dataclass(frozen=True)
class Threshold:
    """A KPI threshold; ``low``/``high`` are in the expression's unit (ratios, ms, requests)."""

    bound: Bound
    low: float | None = None
    high: float | None = None

    def breached(self, value: float) -> bool:
        """Whether ``value`` violates the threshold."""
        too_low = self.low is not None and self.bound in (Bound.AT_LEAST, Bound.WITHIN) and value < self.low
        too_high = self.high is not None and self.bound in (Bound.AT_MOST, Bound.WITHIN) and value > self.high
        return too_low or too_high

    def distance(self, value: float) -> float:
        """How far outside the healthy side ``value`` is (negative = inside); used to pick the worst sample."""
        below = (self.low - value) if self.low is not None and self.bound != Bound.AT_MOST else float("-inf")
        above = (value - self.high) if self.high is not None and self.bound != Bound.AT_LEAST else float("-inf")
        return max(below, above)


@dataclass(frozen=True)
class KpiSpec:
    """One row of the KPI table.

    Attributes:
        key: stable identifier (the alert's ``kpi`` label).
        metric: the row's name as in the guide.
        expr: PromQL giving one sample per model / device (may use ``icd:*`` recording rules).
        threshold: the healthy range.
        unit: display unit; ``%`` displays ratios × 100.
        action: what to do when breached (the guide's column).
        alert: the alert of prometheus_rules.yml watching the same condition.
    """

    key: str
    metric: str
    expr: str
    threshold: Threshold
    unit: str
    action: str
    alert: str

    def format_value(self, value: float) -> str:
        if self.unit == "%":
            return f"{value * 100:.3g} %"
        return f"{value:.4g} {self.unit}".strip()

    def format_threshold(self) -> str:
        t = self.threshold
        fmt = (lambda v: f"{v * 100:g}%") if self.unit == "%" else (lambda v: f"{v:g} {self.unit}".strip())
        if t.bound == Bound.WITHIN:
            return f"{fmt(t.low)}-{fmt(t.high)}"
        return f"<= {fmt(t.high)}" if t.bound == Bound.AT_MOST else f">= {fmt(t.low)}"


KPIS: tuple[KpiSpec, ...] = (
    KpiSpec("p95_latency", "P95 Latency", "icd:request_latency_p95:ms", Threshold(Bound.AT_MOST, high=200.0),
            "ms", "Scale up if exceeded", "ICDHighLatency"),
    KpiSpec("error_rate", "Error Rate", "icd:error:ratio", Threshold(Bound.AT_MOST, high=0.001),
            "%", "Investigate errors", "ICDHighErrorRate"),
    KpiSpec("gpu_utilization", "GPU Utilization", "icd:gpu_utilization:ratio",
            Threshold(Bound.WITHIN, low=0.70, high=0.90), "%", "Optimal range", "ICDGPUUtilizationOutOfRange"),
    KpiSpec("queue_depth", "Queue Depth", "icd:queue_depth:requests", Threshold(Bound.AT_MOST, high=10.0),
            "requests", "Check batching config", "ICDHighQueueDepth"),
    KpiSpec("memory_usage", "Memory Usage", "icd:gpu_memory_used:ratio or icd:system_memory_used:ratio",
            Threshold(Bound.AT_MOST, high=0.90), "%", "Add GPU instances", "ICDHighMemoryUsage"),
    KpiSpec("cache_hit_rate", "Cache Hit Rate", "icd:correlation_cache_hit:ratio",
            Threshold(Bound.AT_LEAST, low=0.95), "%", "Validate correlation cache", "ICDLowCacheHitRate"),
)
"""The guide's table, in its order."""


@dataclass(frozen=True)
class KpiReading:
    """A KPI evaluated now."""

    spec: KpiSpec
    state: KpiState
    value: float | None
    where: str
    samples: int
    by_target: tuple[tuple[str, float], ...] = ()
    """Every finite sample as (model/device, value), worst first."""

    def to_dict(self) -> dict[str, object]:
        return {
            "kpi": self.spec.key, "metric": self.spec.metric, "state": self.state.value, "value": self.value,
            "unit": self.spec.unit if self.spec.unit != "%" else "ratio", "where": self.where,
            "threshold": self.spec.format_threshold(), "action": self.spec.action, "samples": self.samples,
            "by_target": {where: value for where, value in self.by_target},
        }


def _where(sample: Sample) -> str:
    labels = sample.labels
    if "model" in labels:
        return f"{labels['model']} v{labels.get('version', '?')}"
    if "gpu_uuid" in labels:
        return f"GPU {labels['gpu_uuid']}"
    return "system"


def judge(spec: KpiSpec, samples: Sequence[Sample]) -> KpiReading:
    """Turn the samples of ``spec.expr`` into a reading (pure: no I/O)."""
    finite = [s for s in samples if s.is_number]
    if not finite:
        return KpiReading(spec, KpiState.NO_DATA, None, "", 0)
    ranked = sorted(finite, key=lambda s: spec.threshold.distance(s.value), reverse=True)
    worst = ranked[0]
    state = KpiState.BREACHED if spec.threshold.breached(worst.value) else KpiState.OK
    return KpiReading(spec, state, worst.value, _where(worst), len(finite),
                      tuple((_where(s), s.value) for s in ranked))


def evaluate_kpis(client: PrometheusClient, rules: RuleSet, kpis: Sequence[KpiSpec] = KPIS) -> list[KpiReading]:
    """Evaluate every KPI on ``client``'s Prometheus.

    Uses the ``icd:*`` recording rules when that Prometheus evaluates them, else their expressions from
    ``rules`` (so it also works against a Prometheus that only scrapes Triton).
    """
    loaded = client.recording_rule_names()
    readings = []
    for spec in kpis:
        needed = {name for name in rules.recording if name in spec.expr}
        expr = spec.expr if needed <= loaded else rules.expand(spec.expr)
        readings.append(judge(spec, client.query(expr)))
    return readings


def any_breached(readings: Sequence[KpiReading]) -> bool:
    return any(r.state == KpiState.BREACHED for r in readings)
