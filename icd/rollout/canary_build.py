"""Turn the guide's canary flags into a :class:`~icd.rollout.canary_spec.CanarySpec` (one place for CLI and library).

``--traffic-percentage`` is the step (and, by default, the max weight); ``--monitor-duration`` sets how many
intervals the canary is analysed before promotion. The strategy decides the checks:

* ``canary`` / ``ab``: p95 increase ≤ ``alert_threshold`` %, error-rate difference ≤ ``error_rate_diff`` pp (router
  log, relative to the primary); with ``mirror_share`` > 0 also output agreement ≥ ``min_agreement`` on mirrored
  requests;
* ``mirror``: output agreement ≥ ``min_agreement``, shadow p95 increase ≤ ``alert_threshold`` %, candidate error
  rate ≤ ``error_rate_diff`` % — all on mirrored requests.

Example:
    spec = build_canary_spec(CanaryFlags(primary="bert_baseline", canary="bert_icd", step=10, interval_s=60,
                                         monitor_duration_s=3600))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from icd.errors import UserError
from icd.rollout.canary_spec import (
    DEFAULT_ERROR_RATE_DIFF_PP,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_SAMPLES,
    BuiltinHook,
    CanarySpec,
    HeaderMatch,
    HookType,
    MetricCheck,
    MetricKind,
    Strategy,
    ThresholdRange,
    Webhook,
    agreement_check,
    spec_error_text,
)


@dataclass
class CanaryFlags:
    """What the user asked for (the flags of ``icd canary deploy`` / ``deploy_canary.py``)."""

    primary: str
    canary: str
    step: float = 10.0
    max_weight: float | None = None
    interval_s: float = 60.0
    monitor_duration_s: float = 3600.0
    threshold: int = 2
    alert_threshold: float = 5.0
    error_rate_diff: float = DEFAULT_ERROR_RATE_DIFF_PP
    min_samples: int = DEFAULT_MIN_SAMPLES
    strategy: Strategy = Strategy.CANARY
    match_header: list[str] = field(default_factory=list)
    """``NAME=VALUE`` (``NAME=~REGEX``) for the ab strategy."""
    match_cookie: list[str] = field(default_factory=list)
    mirror_share: float = 0.0
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    load_rate: float | None = None
    """Generate this many req/s through the router (the ``load-test`` webhook)."""
    load_inputs: str = "text"
    webhooks: list[str] = field(default_factory=list)
    """``TYPE=URL`` (``pre-rollout=http://...``), URL webhooks."""
    validate: bool = False
    """Run the ``validate`` webhook (deployment checks on the canary) before any traffic moves."""
    max_no_data: int = 5


def _matches(flags: CanaryFlags) -> list[HeaderMatch]:
    out = []
    for kind, items in (("header", flags.match_header), ("cookie", flags.match_cookie)):
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or not name or not value:
                raise UserError(f"--match-{kind} {item!r}: expected NAME=VALUE (or NAME=~REGEX)")
            regex = value.startswith("~")
            if regex:
                try:  # nginx (PCRE) reads more than Python's re; what Python cannot read, nginx refuses too
                    re.compile(value[1:])
                except re.error as exc:
                    raise UserError(f"--match-{kind} {item!r}: not a regular expression ({exc})") from None
            out.append(HeaderMatch(**{kind: name.strip()}, value=value[1:] if regex else value, regex=regex))
    return out


def _webhooks(flags: CanaryFlags) -> list[Webhook]:
    hooks = []
    for i, item in enumerate(flags.webhooks):
        kind, sep, url = item.partition("=")
        try:
            hooks.append(Webhook(name=f"{kind}-{i}", type=HookType(kind), url=url))
        except ValueError:
            allowed = ", ".join(h.value for h in HookType)
            raise UserError(f"--webhook {item!r}: expected TYPE=URL with TYPE one of {allowed}") from None
        if not sep:
            raise UserError(f"--webhook {item!r}: expected TYPE=URL")
    if flags.validate:
        hooks.insert(0, Webhook(name="validate", type=HookType.PRE_ROLLOUT, builtin=BuiltinHook.VALIDATE))
    if flags.load_rate is not None and not (math.isfinite(flags.load_rate) and flags.load_rate > 0):
        raise UserError(f"--load-rate {flags.load_rate:g}: expected requests per second > 0")
    if flags.load_inputs not in ("text", "synthetic"):
        raise UserError(f"--load-inputs {flags.load_inputs!r}: expected 'text' or 'synthetic'")
    if flags.load_rate:
        hooks.append(Webhook(name="load-test", type=HookType.ROLLOUT, builtin=BuiltinHook.LOAD_TEST,
                             metadata={"rate": f"{flags.load_rate:g}", "inputs": flags.load_inputs}))
    return hooks


def _metrics(flags: CanaryFlags) -> list[MetricCheck]:
    if flags.strategy is Strategy.MIRROR:
        return [agreement_check(flags.min_agreement),
                MetricCheck(name="shadow-p95-latency-increase", kind=MetricKind.SHADOW_P95_INCREASE_PCT,
                            threshold_range=ThresholdRange(max=flags.alert_threshold)),
                MetricCheck(name="shadow-error-rate", kind=MetricKind.SHADOW_ERROR_RATE_PCT,
                            threshold_range=ThresholdRange(max=flags.error_rate_diff))]
    checks = [MetricCheck(name="p95-latency-increase", kind=MetricKind.P95_LATENCY_INCREASE_PCT,
                          threshold_range=ThresholdRange(max=flags.alert_threshold)),
              MetricCheck(name="error-rate-difference", kind=MetricKind.ERROR_RATE_DIFF_PP,
                          threshold_range=ThresholdRange(max=flags.error_rate_diff))]
    if flags.mirror_share > 0:
        checks.append(agreement_check(flags.min_agreement))
    return checks


def build_canary_spec(flags: CanaryFlags) -> CanarySpec:
    """The spec for ``flags``; a bad value raises :class:`UserError` naming the flag / field."""
    if not (math.isfinite(flags.step) and flags.step > 0):
        raise UserError(f"--traffic-percentage must be > 0, got {flags.step:g}")
    if flags.max_weight is not None and not (math.isfinite(flags.max_weight) and 0 < flags.max_weight <= 100):
        raise UserError(f"--max-weight must be within (0, 100], got {flags.max_weight:g}")
    if not (math.isfinite(flags.alert_threshold) and math.isfinite(flags.error_rate_diff)):
        raise UserError(f"--alert-threshold {flags.alert_threshold:g} / --error-rate-diff {flags.error_rate_diff:g}: "
                        "expected numbers")
    if not (math.isfinite(flags.interval_s) and flags.interval_s > 0):
        raise UserError(f"--interval must be > 0, got {flags.interval_s:g}")
    if not 0.0 <= flags.mirror_share <= 1.0:
        raise UserError(f"--mirror-share must be within [0, 1], got {flags.mirror_share:g}")
    top = flags.max_weight if flags.max_weight is not None else flags.step
    steps = math.ceil(top / flags.step) if flags.strategy is Strategy.CANARY else 0
    iterations = max(1, round(flags.monitor_duration_s / flags.interval_s) - steps + (1 if steps else 0))
    try:
        return CanarySpec(primary=flags.primary, canary=flags.canary, strategy=flags.strategy,
                          interval_s=flags.interval_s, threshold=flags.threshold, step_weight=flags.step,
                          max_weight=top, iterations=iterations, min_samples=flags.min_samples,
                          max_no_data=flags.max_no_data, match=_matches(flags), mirror_share=flags.mirror_share,
                          metrics=_metrics(flags), webhooks=_webhooks(flags))
    except ValidationError as exc:
        raise UserError(f"canary spec: {spec_error_text(exc)}") from None
