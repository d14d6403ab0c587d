"""Canary analysis: run every metric check, judge each against its threshold range, return evidence.

Example:
    result = analyse(spec, AccessLogProvider("runs/router/access.jsonl"))
    if result.verdict is CheckVerdict.FAIL: ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from icd.rollout.canary_spec import CanarySpec, MetricCheck, ThresholdRange
from icd.rollout.phase import CheckVerdict
from icd.rollout.providers import MetricProvider, NoValuesFound, ProviderError, QueryContext


def check_threshold(value: float, rng: ThresholdRange) -> bool:
    """True when ``value`` lies inside ``rng`` (bounds inclusive, missing bounds open)."""
    if rng.min is not None and value < rng.min:
        return False
    return not (rng.max is not None and value > rng.max)


@dataclass(frozen=True)
class CheckResult:
    """Evidence for one check."""

    name: str
    verdict: CheckVerdict
    value: float | None
    threshold_min: float | None
    threshold_max: float | None
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True)
class AnalysisResult:
    """All checks of one analysis; the verdict is FAIL if any failed, else NO_DATA if any lacked data."""

    verdict: CheckVerdict
    checks: tuple[CheckResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "checks": [c.to_dict() for c in self.checks]}


def run_check(check: MetricCheck, provider: MetricProvider, ctx: QueryContext) -> CheckResult:
    """Evaluate one check; a provider error counts as a failed check (the rollout must not proceed blind)."""
    lo, hi = check.threshold_range.min, check.threshold_range.max
    try:
        value, how = provider.measure(check, ctx)
    except NoValuesFound as exc:
        return CheckResult(check.name, CheckVerdict.NO_DATA, None, lo, hi, f"no values: {exc}")
    except ProviderError as exc:
        return CheckResult(check.name, CheckVerdict.FAIL, None, lo, hi, f"provider error: {exc}")
    ok = check_threshold(value, check.threshold_range)
    return CheckResult(check.name, CheckVerdict.PASS if ok else CheckVerdict.FAIL, value, lo, hi, how)


def analyse(spec: CanarySpec, provider: MetricProvider) -> AnalysisResult:
    """Run all of ``spec.metrics`` for the last ``spec.interval_s`` seconds."""
    ctx = QueryContext(spec.primary, spec.canary, spec.interval_s, spec.min_samples)
    checks = tuple(run_check(c, provider, ctx) for c in spec.metrics)
    verdicts = {c.verdict for c in checks}
    if CheckVerdict.FAIL in verdicts:
        verdict = CheckVerdict.FAIL
    elif CheckVerdict.NO_DATA in verdicts:
        verdict = CheckVerdict.NO_DATA
    else:
        verdict = CheckVerdict.PASS
    return AnalysisResult(verdict, checks)
