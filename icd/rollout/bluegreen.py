"""Blue-green switch as a strategy of the rollout loop: validate the target colour, switch, watch, switch back.

``switch_traffic`` builds a ``bluegreen`` :class:`~icd.rollout.canary_spec.CanarySpec` and runs it through the
same scheduler as every other rollout (:mod:`icd.rollout.scheduler`):

* ``pre-rollout``: the ``validate`` webhook (``validate_deployment.py``'s checks on the target colour) — a failure
  refuses the switch and the router is not touched;
* progressing: all traffic on the target colour; every ``watch_interval`` the ``ready`` webhook (the model answers
  ready on the target) and the router's window *of requests served with that colour active* must meet the error
  rate and the p95 SLO; one failure switches back;
* after ``validation_time`` of passing windows the switch stands. Windows with too few routed requests are "no
  data": they never count as passing, and a watch that saw no traffic at all ends *inconclusive* (switched back,
  exit non-zero) — never "passed" on 0 judged requests. ``load_rate`` generates traffic through the router while
  watching (the ``load-test`` webhook) when no live traffic is expected.

Every decision, with its evidence, is in ``<state>/decisions.jsonl``.

Example:
    result = switch_traffic(router, SwitchSpec(from_colour="blue", to_colour="green", model="bert_icd",
                                               validation_time_s=600, golden_file=Path("golden.json")), state_dir)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from icd.errors import UserError
from icd.rollout.canary_spec import (
    BuiltinHook,
    CanarySpec,
    HookType,
    MetricCheck,
    MetricKind,
    Strategy,
    ThresholdRange,
    Webhook,
)
from icd.rollout.controller import run_controller
from icd.rollout.phase import RolloutOutcome
from icd.rollout.preflight import check_ready, check_routed
from icd.rollout.providers import AccessLogProvider
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.router_ops import ManagedRouter
from icd.rollout.scheduler import RolloutScheduler
from icd.rollout.webhooks import HookContext, HookRunner

DEFAULT_WATCH_INTERVAL_S = 5.0
DEFAULT_PRECHECK_S = 10.0


class SwitchOutcome(str, Enum):
    """How a blue-green switch ended."""

    REFUSED = "refused"
    """The target failed validation before the switch; the router was not touched."""
    SWITCHED = "switched"
    """The target took all traffic and passed every watch window of the validation time."""
    ROLLED_BACK = "rolled back"
    """The target failed while being watched; traffic was switched back."""
    INCONCLUSIVE = "inconclusive"
    """Too little traffic reached the target to judge it; traffic was switched back."""


_OUTCOMES = {RolloutOutcome.REFUSED.value: SwitchOutcome.REFUSED, RolloutOutcome.PROMOTED.value: SwitchOutcome.SWITCHED,
             RolloutOutcome.ROLLED_BACK.value: SwitchOutcome.ROLLED_BACK,
             RolloutOutcome.INCONCLUSIVE.value: SwitchOutcome.INCONCLUSIVE}


@dataclass
class SwitchSpec:
    """A switch from one colour to another and how it is judged."""

    from_colour: str
    to_colour: str
    model: str
    validation_time_s: float = 600.0
    precheck_duration_s: float = DEFAULT_PRECHECK_S
    watch_interval_s: float = DEFAULT_WATCH_INTERVAL_S
    slo_p95_ms: float = 250.0
    max_error_rate: float = 0.01
    golden_file: Path | None = None
    model_repository: Path | None = None
    min_router_samples: int = 10
    load_rate: float | None = None
    """Generate this many req/s through the router while watching (``None``: judge live traffic only)."""
    load_inputs: str = "text"

    def to_canary_spec(self) -> CanarySpec:
        iterations = max(1, math.ceil(self.validation_time_s / self.watch_interval_s))
        meta = {"test_duration": f"{self.precheck_duration_s:g}", "slo_p95_ms": f"{self.slo_p95_ms:g}",
                "max_error_rate": "0"}
        if self.golden_file is not None:
            meta["golden"] = str(self.golden_file)
        if self.model_repository is not None:
            meta["model_repository"] = str(self.model_repository)
        hooks = [Webhook(name="validate", type=HookType.PRE_ROLLOUT, builtin=BuiltinHook.VALIDATE, metadata=meta),
                 Webhook(name="ready", type=HookType.ROLLOUT, builtin=BuiltinHook.READY, timeout_s=2.0)]
        if self.load_rate:
            hooks.append(Webhook(name="load-test", type=HookType.ROLLOUT, builtin=BuiltinHook.LOAD_TEST,
                                 metadata={"rate": f"{self.load_rate:g}", "inputs": self.load_inputs}))
        metrics = [
            MetricCheck(name="error-rate", kind=MetricKind.ERROR_RATE_PCT,
                        threshold_range=ThresholdRange(max=100.0 * self.max_error_rate)),
            MetricCheck(name="p95-latency", kind=MetricKind.P95_LATENCY_MS,
                        threshold_range=ThresholdRange(max=self.slo_p95_ms)),
        ]
        return CanarySpec(primary=self.from_colour, canary=self.to_colour, strategy=Strategy.BLUEGREEN,
                          model=self.model, interval_s=self.watch_interval_s, threshold=1, iterations=iterations,
                          max_no_data=iterations, min_samples=self.min_router_samples, metrics=metrics,
                          webhooks=hooks)


@dataclass
class SwitchResult:
    outcome: SwitchOutcome
    reason: str
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "reason": self.reason, "decisions": self.decisions}


def colour_addr(router: NginxRouter, colour: str) -> str:
    """``host:port`` of the first server of ``colour`` (UserError when the router has no such colour)."""
    upstreams = router.spec.upstreams
    if colour not in upstreams:
        raise UserError(f"colour {colour!r} is not an upstream of the router (have {sorted(upstreams)})")
    return upstreams[colour][0]


def switch_traffic(router: NginxRouter, spec: SwitchSpec, state_dir: Path,
                   sleep: Callable[[float], None] = time.sleep) -> SwitchResult:
    """Validate ``to_colour``; switch; watch for ``validation_time_s``; switch back on a failed or empty watch."""
    live = router.spec
    if live.active != spec.from_colour:
        raise UserError(f"router's active colour is {live.active!r}, not --from {spec.from_colour!r}")
    target = colour_addr(router, spec.to_colour)
    check_ready(colour_addr(router, spec.from_colour), [spec.model], where=f"the serving colour {spec.from_colour}")
    check_routed(router, [spec.model])
    canary_spec = spec.to_canary_spec()
    hooks = HookRunner(canary_spec, HookContext(router.url, target, live.public_model))
    scheduler = RolloutScheduler(ManagedRouter(router), AccessLogProvider(router.access_log), state_dir, hooks=hooks)
    scheduler.begin(canary_spec)
    final = run_controller(scheduler, sleep=sleep)
    decisions = [d.to_dict() for d in scheduler.log.read()]
    outcome = _OUTCOMES.get(final.outcome, SwitchOutcome.INCONCLUSIVE)
    return SwitchResult(outcome, final.reason, decisions)
