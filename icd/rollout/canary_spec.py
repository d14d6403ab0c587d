"""A canary rollout's specification, in Flagger's terms (interval, threshold, stepWeight, maxWeight, metrics).

Metric checks are judged *relative to the primary* (baseline): the canary's p95 latency increase in % and its
error-rate difference in percentage points. Each check carries a PromQL template (rendered with the canary and
primary model names and the interval) for :class:`~icd.rollout.providers.PrometheusProvider`, and a ``kind``
that :class:`~icd.rollout.providers.AccessLogProvider` computes from the router's log.

Example:
    spec = CanarySpec.progressive("bert_baseline", "bert_icd", step_weight=10, max_weight=50, alert_threshold=5.0)
"""

from __future__ import annotations

import math
from enum import Enum

import jinja2
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_INTERVAL_S = 60.0
DEFAULT_THRESHOLD = 2
DEFAULT_ERROR_RATE_DIFF_PP = 1.0
DEFAULT_MIN_SAMPLES = 20


class MetricKind(str, Enum):
    """What a metric check measures (relative to the primary)."""

    P95_LATENCY_INCREASE_PCT = "p95_latency_increase_pct"
    """100 · (p95(canary) / p95(primary) − 1), from the router's request-duration histogram."""
    ERROR_RATE_DIFF_PP = "error_rate_diff_pp"
    """100 · (error rate(canary) − error rate(primary)), errors = 5xx answers at the router."""
    PROMQL = "promql"
    """Any PromQL template (Prometheus provider only)."""


P95_TEMPLATE = (
    '100 * (histogram_quantile(0.95, sum by (le) (rate(icd_router_request_duration_seconds_bucket'
    '{variant="{{ canary }}"}[{{ interval }}]))) / histogram_quantile(0.95, sum by (le) '
    '(rate(icd_router_request_duration_seconds_bucket{variant="{{ primary }}"}[{{ interval }}]))) - 1)'
)
ERROR_TEMPLATE = (
    '100 * (sum(rate(icd_router_requests_total{variant="{{ canary }}",code=~"5.."}[{{ interval }}])) / '
    'sum(rate(icd_router_requests_total{variant="{{ canary }}"}[{{ interval }}])) - '
    'sum(rate(icd_router_requests_total{variant="{{ primary }}",code=~"5.."}[{{ interval }}])) / '
    'sum(rate(icd_router_requests_total{variant="{{ primary }}"}[{{ interval }}])))'
)


class ThresholdRange(BaseModel):
    """Accepted range of a check's value (either bound optional), as Flagger's ``thresholdRange``."""

    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    """Lowest accepted value (inclusive)."""
    max: float | None = None
    """Highest accepted value (inclusive)."""


class MetricCheck(BaseModel):
    """One metric check of the analysis."""

    model_config = ConfigDict(extra="forbid")
    name: str
    """Name shown in decisions and reports."""
    kind: MetricKind
    """What is measured (see :class:`MetricKind`)."""
    threshold_range: ThresholdRange
    """Accepted range; outside it the check fails."""
    query: str = ""
    """PromQL template; ``{{ canary }}``, ``{{ primary }}``, ``{{ interval }}`` are filled in."""

    def render(self, canary: str, primary: str, interval_s: float) -> str:
        """The PromQL query for this check."""
        window = f"{max(1, math.ceil(interval_s))}s"
        return jinja2.Template(self.query).render(canary=canary, primary=primary, interval=window)


class CanarySpec(BaseModel):
    """The rollout: who, how fast, and what counts as healthy."""

    model_config = ConfigDict(extra="forbid")
    primary: str
    """The model serving today (e.g. ``bert_baseline``)."""
    canary: str
    """The new model (e.g. ``bert_icd``)."""
    interval_s: float = Field(DEFAULT_INTERVAL_S, gt=0)
    """Seconds between analyses (one tick each)."""
    threshold: int = Field(DEFAULT_THRESHOLD, ge=1)
    """Failed checks before rollback."""
    step_weight: float = Field(10.0, gt=0, le=100)
    """Canary weight increment (%) after each passing analysis."""
    max_weight: float = Field(50.0, gt=0, le=100)
    """Highest canary weight (%) before promotion."""
    iterations: int = Field(1, ge=1)
    """Passing analyses needed at ``max_weight`` before promotion."""
    max_no_data: int = Field(5, ge=1)
    """Consecutive analyses without data before the rollout fails (a canary that gets no traffic is not healthy)."""
    min_samples: int = Field(DEFAULT_MIN_SAMPLES, ge=1)
    """Requests per variant and interval below which a log-based check reports no data."""
    metrics: list[MetricCheck]
    """The checks; all must pass."""

    @model_validator(mode="after")
    def _check(self) -> CanarySpec:
        if self.primary == self.canary:
            raise ValueError(f"canary must differ from primary, both are {self.primary!r}")
        if self.step_weight > self.max_weight:
            raise ValueError(f"step_weight {self.step_weight} > max_weight {self.max_weight}")
        if not self.metrics:
            raise ValueError("metrics: at least one check is needed")
        return self

    @classmethod
    def progressive(
        cls,
        primary: str,
        canary: str,
        *,
        alert_threshold: float = 5.0,
        error_rate_diff_pp: float = DEFAULT_ERROR_RATE_DIFF_PP,
        **kwargs: object,
    ) -> CanarySpec:
        """A spec with the two standard relative checks (p95 increase ≤ ``alert_threshold`` %, error diff)."""
        metrics = [
            MetricCheck(name="p95-latency-increase", kind=MetricKind.P95_LATENCY_INCREASE_PCT,
                        threshold_range=ThresholdRange(max=alert_threshold), query=P95_TEMPLATE),
            MetricCheck(name="error-rate-difference", kind=MetricKind.ERROR_RATE_DIFF_PP,
                        threshold_range=ThresholdRange(max=error_rate_diff_pp), query=ERROR_TEMPLATE),
        ]
        return cls(primary=primary, canary=canary, metrics=metrics, **kwargs)  # type: ignore[arg-type]
