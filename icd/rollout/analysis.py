"""The one analysis of the rollout loop: run every metric check and rollout webhook, judge, return evidence.

Every strategy is judged here: the canary and A/B strategies on the router's requests split by variant
(relative to the primary), blue-green on the canary colour's requests (absolute SLOs), mirroring on the shadow
comparator's judgements (output agreement, latency, errors). A check that has no data says so ("no data"),
which is not a failure; a provider that cannot be asked fails the check with its reason.

Example:
    result = analyse(spec, LogProvider(router.access_log, router.workdir / "shadow.jsonl"))
    if result.verdict is CheckVerdict.FAIL: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from icd.rollout.canary_spec import CanarySpec, MetricCheck, Strategy, ThresholdRange
from icd.rollout.phase import CheckVerdict
from icd.rollout.providers import MetricProvider, NoValuesFound, ProviderError, QueryContext
from icd.rollout.webhooks import HookResult


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

    def summary(self) -> str:
        """One line: each check's value and verdict."""
        parts = []
        for c in self.checks:
            value = "n/a" if c.value is None else f"{c.value:+.3g}"
            parts.append(f"{c.name} {value} ({c.verdict.value})")
        return "; ".join(parts)


def context_for(spec: CanarySpec) -> QueryContext:
    """What the checks of ``spec`` look at (blue-green: requests by colour; else by variant)."""
    by = "colour" if spec.strategy is Strategy.BLUEGREEN else "variant"
    return QueryContext(spec.primary, spec.canary, spec.interval_s, spec.min_samples, by)


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


def hook_check(result: HookResult) -> CheckResult:
    """A rollout webhook's result as a check of the analysis."""
    verdict = CheckVerdict.PASS if result.ok else CheckVerdict.FAIL
    return CheckResult(f"webhook {result.name}", verdict, None, None, None, result.detail)


def combine(checks: Sequence[CheckResult]) -> AnalysisResult:
    verdicts = {c.verdict for c in checks}
    if CheckVerdict.FAIL in verdicts:
        verdict = CheckVerdict.FAIL
    elif CheckVerdict.NO_DATA in verdicts:
        verdict = CheckVerdict.NO_DATA
    else:
        verdict = CheckVerdict.PASS
    return AnalysisResult(verdict, tuple(checks))


def analyse(spec: CanarySpec, provider: MetricProvider, hooks: Sequence[HookResult] = ()) -> AnalysisResult:
    """Run all of ``spec.metrics`` for the last ``spec.interval_s`` seconds, plus the rollout hooks' results."""
    ctx = context_for(spec)
    return combine([*(hook_check(h) for h in hooks), *(run_check(c, provider, ctx) for c in spec.metrics)])
