"""The rollout state machine: one :meth:`RolloutScheduler.tick` per interval (Flagger's ``scheduler.go``).

One loop for every strategy (canary weights, A/B header match, blue-green colours, mirroring): the strategy only
changes what the router is told (:func:`icd.rollout.strategies.routes_for`). A tick loads the persisted status,
runs the webhooks due in its phase (``pre-rollout`` before any traffic moves; ``rollout`` with each analysis;
``confirm-promotion`` before promotion; ``post-rollout`` at the end), decides (pure :func:`decide`), appends the
decision to the decision log (fsync), applies the routing in *one* router reload (weights, match rules, mirror
and colour together: never half-switched), then saves the status atomically. If the controller dies between the
log append and the status save, the next tick finds a decision newer than the status and re-applies it instead
of deciding again: no decision is lost or taken twice.

Example:
    scheduler = RolloutScheduler(router, LogProvider(log, shadow_log), Path("runs/canary"))
    scheduler.begin(CanarySpec.progressive("bert_baseline", "bert_icd", interval_s=60))
    while not scheduler.tick().phase.is_terminal: time.sleep(60)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from icd.rollout.analysis import AnalysisResult, analyse
from icd.rollout.canary_spec import CanarySpec, HookType, Strategy
from icd.rollout.decision_log import Action, Decision, DecisionLog
from icd.rollout.phase import CheckVerdict, RolloutOutcome, RolloutPhase
from icd.rollout.providers import MetricProvider
from icd.rollout.router_nginx import Routes
from icd.rollout.status_store import DECISIONS_FILE, CanaryStatus, StatusStore
from icd.rollout.strategies import first_weight, routes_for
from icd.rollout.webhooks import HookResult, HookRunner
from icd.rollout.weights import next_canary_weight


class TrafficRouter(Protocol):
    """Where the scheduler's routing goes (Flagger's ``SetRoutes``): :class:`icd.rollout.router_ops.ManagedRouter`."""

    def set_routes(self, routes: Routes) -> object:
        """Apply weights, match rules, mirror and colour in one change."""
        ...


def _to(status: CanaryStatus, phase: RolloutPhase, **changes: object) -> CanaryStatus:
    history = status.history + [phase.value] if phase is not status.phase else list(status.history)
    return dataclasses.replace(status, phase=phase, history=history, **changes)  # type: ignore[arg-type]


def _failed(hooks: list[HookResult]) -> list[HookResult]:
    return [h for h in hooks if not h.ok]


def decide(spec: CanarySpec, status: CanaryStatus, analysis: AnalysisResult | None, *,
           pre_rollout: list[HookResult] | None = None, promotion_confirmed: bool = True,
           ) -> tuple[Action, str, CanaryStatus]:
    """The next status from the current one, the analysis (when progressing) and the webhooks' answers. Pure."""
    phase = status.phase
    if phase is RolloutPhase.INITIALIZED:
        failed_hooks = _failed(pre_rollout or [])
        if failed_hooks:
            failed = status.failed_checks + 1
            text = "; ".join(f"{h.name}: {h.detail}" for h in failed_hooks)
            if failed >= spec.threshold:
                return Action.ROLLBACK, f"pre-rollout webhook failed {failed}x: {text}", _to(
                    status, RolloutPhase.FAILED, failed_checks=failed, outcome=RolloutOutcome.REFUSED.value)
            return Action.FAILED_CHECK, f"pre-rollout webhook failed ({failed}/{spec.threshold}): {text}", _to(
                status, phase, failed_checks=failed)
        return Action.START, f"{spec.strategy.value}: route the first step to {spec.canary}", _to(
            status, RolloutPhase.PROGRESSING, canary_weight=first_weight(spec), failed_checks=0)
    if phase is RolloutPhase.PROMOTING:
        return Action.FINALISE, f"{spec.canary} serves 100%", _to(
            status, RolloutPhase.SUCCEEDED, outcome=RolloutOutcome.PROMOTED.value)
    if phase is not RolloutPhase.PROGRESSING:
        raise ValueError(f"no transition from terminal phase {phase.value}")
    if analysis is None:
        raise ValueError("a progressing tick needs an analysis")
    if analysis.verdict is CheckVerdict.FAIL:
        failed = status.failed_checks + 1
        if failed >= spec.threshold:
            return Action.ROLLBACK, f"{failed} failed checks (threshold {spec.threshold}): {analysis.summary()}", _to(
                status, RolloutPhase.FAILED, failed_checks=failed, no_data_checks=0, canary_weight=0.0,
                outcome=RolloutOutcome.ROLLED_BACK.value)
        return Action.FAILED_CHECK, f"failed check {failed}/{spec.threshold}: {analysis.summary()}", _to(
            status, phase, failed_checks=failed, no_data_checks=0)
    if analysis.verdict is CheckVerdict.NO_DATA:
        no_data = status.no_data_checks + 1
        if no_data >= spec.max_no_data:
            return Action.ROLLBACK, (f"inconclusive: no data for {no_data} analyses (max_no_data {spec.max_no_data})"
                                     f" — no traffic reached what is judged; never promoted unjudged"), _to(
                status, RolloutPhase.FAILED, no_data_checks=no_data, canary_weight=0.0,
                outcome=RolloutOutcome.INCONCLUSIVE.value)
        return Action.HALT_NO_DATA, f"no data {no_data}/{spec.max_no_data}: routing kept ({analysis.summary()})", _to(
            status, phase, no_data_checks=no_data)
    if spec.strategy is Strategy.CANARY and status.canary_weight < spec.max_weight:
        weight = next_canary_weight(status.canary_weight, spec.step_weight, spec.max_weight)
        return Action.ADVANCE, f"checks passed: canary weight {status.canary_weight:g}% -> {weight:g}%", _to(
            status, phase, canary_weight=weight, no_data_checks=0)
    iterations = min(status.iterations + 1, spec.iterations)
    if iterations >= spec.iterations:
        if not promotion_confirmed:
            return Action.WAIT_PROMOTION, "analyses passed; a confirm-promotion webhook did not pass: holding", _to(
                status, phase, iterations=iterations, no_data_checks=0)
        return Action.PROMOTE, f"checks passed ({iterations}/{spec.iterations} iterations): promote {spec.canary}", _to(
            status, RolloutPhase.PROMOTING, iterations=iterations, no_data_checks=0, canary_weight=100.0)
    return Action.HOLD, f"checks passed ({iterations}/{spec.iterations} iterations)", _to(
        status, phase, iterations=iterations, no_data_checks=0)


class RolloutScheduler:
    """Advances a rollout one tick at a time; all state lives in ``state_dir``."""

    def __init__(self, router: TrafficRouter, provider: MetricProvider, state_dir: str | Path,
                 clock: Callable[[], float] = time.time, hooks: HookRunner | None = None) -> None:
        self.router = router
        self.provider = provider
        self.store = StatusStore(state_dir)
        self.log = DecisionLog(Path(state_dir) / DECISIONS_FILE)
        self.clock = clock
        self.hooks = hooks

    def _hooks(self, hook_type: HookType, phase: RolloutPhase) -> list[HookResult]:
        return self.hooks.run(hook_type, phase) if self.hooks is not None else []

    def begin(self, spec: CanarySpec) -> CanaryStatus:
        """Persist a new rollout (phase Initialized) and route everything to the primary.

        The decision log of a finished earlier rollout in the same folder is moved aside
        (``decisions.<time>.jsonl``), so a new rollout never resumes from an old decision.
        """
        status = self.store.init(spec)
        if self.log.path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.log.path.stat().st_mtime))
            self.log.path.rename(self.log.path.with_name(f"decisions.{stamp}.{time.time_ns() % 10**6}.jsonl"))
        self.router.set_routes(routes_for(spec, status))
        return status

    def _recover(self, spec: CanarySpec, status: CanaryStatus) -> CanaryStatus | None:
        last = self.log.last()
        if last is None or last.tick <= status.tick:
            return None
        recovered = CanaryStatus.from_dict(last.status_after)
        self.router.set_routes(routes_for(spec, recovered))
        self.store.save(spec, recovered)
        return recovered

    def tick(self) -> CanaryStatus:
        """One step of the state machine; returns the saved status."""
        spec, status = self.store.load()
        recovered = self._recover(spec, status)
        if recovered is not None:
            return recovered
        if status.phase.is_terminal:
            return status
        hooks: list[HookResult] = []
        analysis = None
        confirmed = True
        if status.phase is RolloutPhase.INITIALIZED:
            hooks = self._hooks(HookType.PRE_ROLLOUT, status.phase)
            action, reason, new = decide(spec, status, None, pre_rollout=hooks)
        elif status.phase is RolloutPhase.PROGRESSING:
            hooks = self._hooks(HookType.ROLLOUT, status.phase)
            analysis = analyse(spec, self.provider, hooks)
            action, reason, new = decide(spec, status, analysis)
            if action is Action.PROMOTE:
                confirm = self._hooks(HookType.CONFIRM_PROMOTION, status.phase)
                hooks += confirm
                confirmed = not _failed(confirm)
                action, reason, new = decide(spec, status, analysis, promotion_confirmed=confirmed)
        else:
            action, reason, new = decide(spec, status, None)
        new = dataclasses.replace(new, tick=status.tick + 1, updated=self.clock(), reason=reason)
        before, after = routes_for(spec, status), routes_for(spec, new)
        self.log.append(Decision(
            tick=new.tick, time=new.updated, action=action, reason=reason, phase_before=status.phase.value,
            phase_after=new.phase.value, weight_before=status.canary_weight, weight_after=new.canary_weight,
            analysis=analysis.to_dict() if analysis else None, status_after=new.to_dict(),
            hooks=[h.to_dict() for h in hooks], routes=after.describe() if after != before else "",
        ))
        if after != before:
            self.router.set_routes(after)
        self.store.save(spec, new)
        if new.phase.is_terminal:  # after the routing is final: a slow hook never delays a rollback
            post = self._hooks(HookType.POST_ROLLOUT, new.phase)
            if post:
                new = dataclasses.replace(new, post_rollout=[h.to_dict() for h in post])
                self.store.save(spec, new)
        return new

    def status(self) -> tuple[CanarySpec, CanaryStatus]:
        return self.store.load()


CanaryScheduler = RolloutScheduler
"""The name of the canary-only scheduler this loop replaced (kept for library users)."""
