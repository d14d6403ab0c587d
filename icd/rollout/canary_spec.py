"""A rollout's specification in Flagger's terms: one ``Canary`` resource whatever the strategy.

``strategy`` picks what the router is told while the analysis runs (:mod:`icd.rollout.strategies`):

* ``canary`` — progressive weights: ``step_weight`` more % to the canary after each passing analysis, up to
  ``max_weight``, then ``iterations`` passing analyses there, then promotion;
* ``ab`` — A/B testing: requests matching ``match`` (a header or cookie) go to the canary, the rest to the primary,
  for ``iterations`` passing analyses, then promotion;
* ``bluegreen`` — ``primary`` and ``canary`` are upstream *colours*: all traffic switches to the canary colour,
  which must pass ``iterations`` analyses, or traffic switches back;
* ``mirror`` — shadow traffic: ``mirror_share`` of the requests is also sent to the canary, whose answers are
  compared with the primary's and never returned; ``iterations`` passing analyses, then promotion.

Metric checks are judged by :mod:`icd.rollout.analysis`. Each carries a ``kind`` the log providers compute and a
PromQL template (rendered with the canary and primary names and the interval) for the Prometheus provider.
Webhooks (:mod:`icd.rollout.webhooks`) plug checks and traffic into the loop: ``pre-rollout``, ``rollout``,
``confirm-promotion``, ``post-rollout``.

Example:
    spec = CanarySpec.progressive("bert_baseline", "bert_icd", step_weight=10, max_weight=50, alert_threshold=5.0)
"""

from __future__ import annotations

import math
import re
from enum import Enum

import jinja2
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_INTERVAL_S = 60.0
DEFAULT_THRESHOLD = 2
DEFAULT_ERROR_RATE_DIFF_PP = 1.0
DEFAULT_MIN_SAMPLES = 20
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class Strategy(str, Enum):
    """How traffic reaches the canary while it is analysed."""

    CANARY = "canary"
    """Progressive traffic weights (``step_weight`` up to ``max_weight``)."""
    AB = "ab"
    """Header / cookie match: matching requests go to the canary."""
    BLUEGREEN = "bluegreen"
    """Switch all traffic to another upstream colour; switch back if it fails."""
    MIRROR = "mirror"
    """Shadow traffic: mirrored requests are judged, the canary's answers never reach a client."""


class MetricKind(str, Enum):
    """What a metric check measures."""

    P95_LATENCY_INCREASE_PCT = "p95_latency_increase_pct"
    """100 · (p95(canary) / p95(primary) − 1), from the router's request times."""
    ERROR_RATE_DIFF_PP = "error_rate_diff_pp"
    """100 · (error rate(canary) − error rate(primary)), errors = 5xx answers at the router."""
    P95_LATENCY_MS = "p95_latency_ms"
    """p95 of the canary's router request times, in ms (blue-green: the canary colour's)."""
    ERROR_RATE_PCT = "error_rate_pct"
    """100 · error rate of the canary at the router (blue-green: of the canary colour)."""
    OUTPUT_AGREEMENT = "output_agreement"
    """Mirrored requests: mean cosine of the outputs (embeddings) or argmax agreement (classifiers), 0..1."""
    SHADOW_P95_INCREASE_PCT = "shadow_p95_increase_pct"
    """Mirrored requests: 100 · (p95(canary) / p95(primary) − 1), both asked by the comparator."""
    SHADOW_ERROR_RATE_PCT = "shadow_error_rate_pct"
    """Mirrored requests: 100 · share the canary failed."""
    PROMQL = "promql"
    """Any PromQL template (Prometheus provider only)."""


SHADOW_METRIC_KINDS = frozenset({MetricKind.OUTPUT_AGREEMENT, MetricKind.SHADOW_P95_INCREASE_PCT,
                                 MetricKind.SHADOW_ERROR_RATE_PCT})
"""Kinds judged on mirrored requests (the shadow comparator)."""

_ROUTER_P95 = ('histogram_quantile(0.95, sum by (le) (rate(icd_router_request_duration_seconds_bucket'
               '{SEL}[{{ interval }}])))')
_ROUTER_ERR = ('sum(rate(icd_router_requests_total{SEL,code=~"5.."}[{{ interval }}])) / '
               'sum(rate(icd_router_requests_total{SEL}[{{ interval }}]))')
_SHADOW_P95 = ('histogram_quantile(0.95, sum by (le) (rate(icd_shadow_latency_seconds_bucket'
               '{candidate="{{ canary }}",role="ROLE"}[{{ interval }}])))')


def _sel(template: str, selector: str) -> str:
    return template.replace("SEL", selector)


_CANARY, _PRIMARY = 'variant="{{ canary }}"', 'variant="{{ primary }}"'
P95_TEMPLATE = f"100 * ({_sel(_ROUTER_P95, _CANARY)} / {_sel(_ROUTER_P95, _PRIMARY)} - 1)"
ERROR_TEMPLATE = f"100 * ({_sel(_ROUTER_ERR, _CANARY)} - {_sel(_ROUTER_ERR, _PRIMARY)})"
TEMPLATES: dict[MetricKind, str] = {
    MetricKind.P95_LATENCY_INCREASE_PCT: P95_TEMPLATE,
    MetricKind.ERROR_RATE_DIFF_PP: ERROR_TEMPLATE,
    MetricKind.P95_LATENCY_MS: f"1000 * {_sel(_ROUTER_P95, ' {{ selector }} ')}",
    MetricKind.ERROR_RATE_PCT: f"100 * ({_sel(_ROUTER_ERR, ' {{ selector }}')})",
    MetricKind.OUTPUT_AGREEMENT: (  # cosine mean for embeddings, else argmax agreement (icd:shadow_agreement:ratio)
        '(sum(rate(icd_shadow_cosine_sum{candidate="{{ canary }}",task="embedding"}[{{ interval }}])) / '
        'sum(rate(icd_shadow_cosine_count{candidate="{{ canary }}",task="embedding"}[{{ interval }}]))) or '
        '(sum(rate(icd_shadow_argmax_agreements_total{candidate="{{ canary }}"}[{{ interval }}])) / '
        'sum(rate(icd_shadow_cosine_count{candidate="{{ canary }}",task="classifier"}[{{ interval }}])))'),
    MetricKind.SHADOW_P95_INCREASE_PCT: (f"100 * ({_SHADOW_P95.replace('ROLE', 'candidate')} / "
                                         f"{_SHADOW_P95.replace('ROLE', 'primary')} - 1)"),
    MetricKind.SHADOW_ERROR_RATE_PCT: (
        '100 * sum(rate(icd_shadow_requests_total{candidate="{{ canary }}",outcome="candidate_error"}'
        '[{{ interval }}])) / sum(rate(icd_shadow_requests_total{candidate="{{ canary }}",'
        'outcome=~"compared|candidate_error"}[{{ interval }}]))'),
}
"""Default PromQL per kind; ``{{ selector }}`` is ``variant="<canary>"`` (``colour=`` for blue-green)."""


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
    """PromQL template (default: the kind's); ``{{ canary }}``, ``{{ primary }}``, ``{{ interval }}``,
    ``{{ selector }}`` are filled in."""

    def render(self, canary: str, primary: str, interval_s: float, selector: str | None = None) -> str:
        """The PromQL query for this check."""
        window = f"{max(1, math.ceil(interval_s))}s"
        template = self.query or TEMPLATES.get(self.kind, "")
        return jinja2.Template(template).render(canary=canary, primary=primary, interval=window,
                                                selector=selector or f'variant="{canary}"')


class HookType(str, Enum):
    """When a webhook is called (Flagger's hook types)."""

    PRE_ROLLOUT = "pre-rollout"
    """Before any traffic moves; a failure counts as a failed check and nothing is routed."""
    ROLLOUT = "rollout"
    """With every analysis; a failure fails that analysis."""
    CONFIRM_PROMOTION = "confirm-promotion"
    """Before promotion; the rollout waits (holds its routing) until it answers 2xx."""
    POST_ROLLOUT = "post-rollout"
    """After the rollout ended (promoted or rolled back); informational."""


class BuiltinHook(str, Enum):
    """Webhooks icd runs itself (no URL needed)."""

    VALIDATE = "validate"
    """The deployment checks of ``validate_deployment.py`` (health, readiness, metadata, golden, latency SLO)."""
    READY = "ready"
    """The canary model answers ready on the upstream."""
    LOAD_TEST = "load-test"
    """Generate traffic through the router while the rollout runs (Flagger's load tester)."""


class Webhook(BaseModel):
    """A check or action plugged into the rollout loop (Flagger's ``webhooks``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    type: HookType
    url: str = ""
    """``http(s)://`` endpoint: POSTed ``{name, strategy, phase, canary, primary, metadata}``; 2xx passes."""
    builtin: BuiltinHook | None = None
    """Run by icd instead of a URL."""
    timeout_s: float = Field(DEFAULT_WEBHOOK_TIMEOUT_S, gt=0)
    """A URL hook that does not answer in time fails (a timeout is never a pass)."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Passed to the hook (URL hooks: in the payload; builtins: their settings, e.g. ``rate``)."""

    @model_validator(mode="after")
    def _one_target(self) -> Webhook:
        if bool(self.url) == (self.builtin is not None):
            raise ValueError(f"webhook {self.name!r}: give exactly one of url / builtin")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook {self.name!r}: url must start with http:// or https://, got {self.url!r}")
        return self


class HeaderMatch(BaseModel):
    """A/B strategy: requests whose header (or cookie) matches go to the canary."""

    model_config = ConfigDict(extra="forbid")
    header: str = ""
    cookie: str = ""
    value: str
    regex: bool = False

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        from icd.rollout.router_config import MatchRule

        MatchRule("canary", self.header, self.cookie, self.value, self.regex).validate()
        return self


class CanarySpec(BaseModel):
    """The rollout: who, how, how fast, and what counts as healthy."""

    model_config = ConfigDict(extra="forbid")
    primary: str
    """The model serving today (e.g. ``bert_baseline``); blue-green: the colour serving today (``blue``)."""
    canary: str
    """The new model (e.g. ``bert_icd``); blue-green: the colour to switch to (``green``)."""
    strategy: Strategy = Strategy.CANARY
    """How traffic reaches the canary (see :class:`Strategy`)."""
    model: str = ""
    """Blue-green only: the model checked on the canary colour (validation, readiness)."""
    interval_s: float = Field(DEFAULT_INTERVAL_S, gt=0)
    """Seconds between analyses (one tick each)."""
    threshold: int = Field(DEFAULT_THRESHOLD, ge=1)
    """Failed checks before rollback."""
    step_weight: float = Field(10.0, gt=0, le=100)
    """Canary strategy: weight increment (%) after each passing analysis."""
    max_weight: float = Field(50.0, gt=0, le=100)
    """Canary strategy: highest weight (%) before promotion."""
    iterations: int = Field(1, ge=1)
    """Passing analyses needed (canary: at ``max_weight``) before promotion."""
    max_no_data: int = Field(5, ge=1)
    """Consecutive analyses without data before the rollout is rolled back as *inconclusive*."""
    min_samples: int = Field(DEFAULT_MIN_SAMPLES, ge=1)
    """Requests per side and interval below which a log-based check reports no data."""
    match: list[HeaderMatch] = Field(default_factory=list)
    """A/B strategy: the header / cookie rules that send a request to the canary."""
    mirror_share: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of requests mirrored to the canary, within [0, 1]: the mirror strategy's shadow traffic, or a
    canary's extra mirrored share that its ``output_agreement`` check judges."""
    metrics: list[MetricCheck]
    """The checks; all must pass."""
    webhooks: list[Webhook] = Field(default_factory=list)
    """Checks and actions plugged into the loop."""

    @model_validator(mode="after")
    def _check(self) -> CanarySpec:
        for field_name in ("primary", "canary", *(("model",) if self.model else ())):
            value = getattr(self, field_name)
            if not _NAME.match(value):
                raise ValueError(f"{field_name} must match {_NAME.pattern}, got {value!r}")
        if self.primary == self.canary:
            raise ValueError(f"canary must differ from primary, both are {self.primary!r}")
        if self.step_weight > self.max_weight:
            raise ValueError(f"step_weight {self.step_weight} > max_weight {self.max_weight}")
        if not self.metrics:
            raise ValueError("metrics: at least one check is needed")
        if self.strategy is Strategy.AB and not self.match:
            raise ValueError("match: the ab strategy needs at least one header / cookie rule")
        if self.strategy is Strategy.MIRROR and self.mirror_share <= 0:
            raise ValueError(f"mirror_share must be within (0, 1] for the mirror strategy, got {self.mirror_share}")
        shadow = [m.name for m in self.metrics if m.kind in SHADOW_METRIC_KINDS]
        if shadow and self.mirror_share <= 0:
            raise ValueError(f"metrics {shadow} judge mirrored requests: set mirror_share > 0")
        if self.strategy is Strategy.BLUEGREEN and not self.model:
            raise ValueError("model: the bluegreen strategy needs the model checked on the canary colour")
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
                        threshold_range=ThresholdRange(max=alert_threshold)),
            MetricCheck(name="error-rate-difference", kind=MetricKind.ERROR_RATE_DIFF_PP,
                        threshold_range=ThresholdRange(max=error_rate_diff_pp)),
        ]
        return cls(primary=primary, canary=canary, metrics=metrics, **kwargs)  # type: ignore[arg-type]


def agreement_check(min_agreement: float = DEFAULT_MIN_AGREEMENT) -> MetricCheck:
    """Gate on the output agreement of mirrored requests (cosine mean / argmax agreement ≥ ``min_agreement``)."""
    return MetricCheck(name="output-agreement", kind=MetricKind.OUTPUT_AGREEMENT,
                       threshold_range=ThresholdRange(min=min_agreement))


def spec_error_text(exc: ValueError) -> str:
    """One line naming each invalid field of a pydantic validation error (or the error's text)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in errors())
