"""The canary state machine: one :meth:`CanaryScheduler.tick` per interval (Flagger's scheduler.go).

A tick loads the persisted status, decides (pure :func:`decide`, fed the analysis when progressing), appends
the decision to the decision log (fsync), applies the weights to the router, then saves the status atomically.
If the controller dies between the log append and the status save, the next tick finds a decision newer than
the status and re-applies it instead of deciding again: no decision is lost or taken twice.

Example:
    scheduler = CanaryScheduler(router, AccessLogProvider(log), Path("runs/canary"))
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
from icd.rollout.canary_spec import CanarySpec
from icd.rollout.decision_log import Action, Decision, DecisionLog
from icd.rollout.phase import CheckVerdict, RolloutPhase
from icd.rollout.providers import MetricProvider
from icd.rollout.status_store import DECISIONS_FILE, CanaryStatus, StatusStore
from icd.rollout.weights import canary_weights, next_canary_weight


class TrafficRouter(Protocol):
    """Where the scheduler's routing goes (Flagger's ``SetRoutes``); :class:`NginxRouter` is one."""

    def set_weights(self, weights: dict[str, float]) -> object:
        """Route traffic by variant → percentage."""
        ...


def weights_for(spec: CanarySpec, status: CanaryStatus) -> dict[str, float]:
    """The routing a status implies."""
    if status.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED):
        return canary_weights(spec.primary, spec.canary, 100.0)
    if status.phase is RolloutPhase.FAILED:
        return canary_weights(spec.primary, spec.canary, 0.0)
    return canary_weights(spec.primary, spec.canary, status.canary_weight)


def _to(status: CanaryStatus, phase: RolloutPhase, **changes: object) -> CanaryStatus:
    history = status.history + [phase.value] if phase is not status.phase else list(status.history)
    return dataclasses.replace(status, phase=phase, history=history, **changes)  # type: ignore[arg-type]


def decide(spec: CanarySpec, status: CanaryStatus, analysis: AnalysisResult | None) -> tuple[Action, str, CanaryStatus]:
    """The next status from the current one (and the analysis, when progressing). Pure."""
    phase = status.phase
    if phase is RolloutPhase.INITIALIZED:
        return Action.START, f"route {spec.step_weight:g}% to {spec.canary}", _to(
            status, RolloutPhase.PROGRESSING, canary_weight=min(spec.step_weight, spec.max_weight))
    if phase is RolloutPhase.PROMOTING:
        return Action.FINALISE, f"{spec.canary} serves 100%", _to(status, RolloutPhase.SUCCEEDED)
    if phase is not RolloutPhase.PROGRESSING:
        raise ValueError(f"no transition from terminal phase {phase.value}")
    if analysis is None:
        raise ValueError("a progressing tick needs an analysis")
    if analysis.verdict is CheckVerdict.FAIL:
        failed = status.failed_checks + 1
        if failed >= spec.threshold:
            return Action.ROLLBACK, f"{failed} failed checks (threshold {spec.threshold})", _to(
                status, RolloutPhase.FAILED, failed_checks=failed, no_data_checks=0, canary_weight=0.0)
        return Action.FAILED_CHECK, f"failed check {failed}/{spec.threshold}", _to(
            status, phase, failed_checks=failed, no_data_checks=0)
    if analysis.verdict is CheckVerdict.NO_DATA:
        no_data = status.no_data_checks + 1
        if no_data >= spec.max_no_data:
            return Action.ROLLBACK, f"no data for {no_data} analyses (max_no_data {spec.max_no_data})", _to(
                status, RolloutPhase.FAILED, no_data_checks=no_data, canary_weight=0.0)
        return Action.HALT_NO_DATA, f"no data {no_data}/{spec.max_no_data}: weight kept", _to(
            status, phase, no_data_checks=no_data)
    if status.canary_weight < spec.max_weight:
        weight = next_canary_weight(status.canary_weight, spec.step_weight, spec.max_weight)
        return Action.ADVANCE, f"checks passed: canary weight {status.canary_weight:g}% -> {weight:g}%", _to(
            status, phase, canary_weight=weight, no_data_checks=0)
    iterations = status.iterations + 1
    if iterations >= spec.iterations:
        return Action.PROMOTE, f"checks passed at max weight {spec.max_weight:g}% ({iterations} iterations)", _to(
            status, RolloutPhase.PROMOTING, iterations=iterations, no_data_checks=0, canary_weight=100.0)
    return Action.HOLD, f"checks passed at max weight ({iterations}/{spec.iterations} iterations)", _to(
        status, phase, iterations=iterations, no_data_checks=0)


class CanaryScheduler:
    """Advances a canary rollout one tick at a time; all state lives in ``state_dir``."""

    def __init__(self, router: TrafficRouter, provider: MetricProvider, state_dir: str | Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.router = router
        self.provider = provider
        self.store = StatusStore(state_dir)
        self.log = DecisionLog(Path(state_dir) / DECISIONS_FILE)
        self.clock = clock

    def begin(self, spec: CanarySpec) -> CanaryStatus:
        """Persist a new rollout (phase Initialized, canary weight 0) and route everything to the primary."""
        status = self.store.init(spec)
        self.router.set_weights(weights_for(spec, status))
        return status

    def _recover(self, spec: CanarySpec, status: CanaryStatus) -> CanaryStatus | None:
        last = self.log.last()
        if last is None or last.tick <= status.tick:
            return None
        recovered = CanaryStatus.from_dict(last.status_after)
        self.router.set_weights(weights_for(spec, recovered))
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
        analysis = analyse(spec, self.provider) if status.phase is RolloutPhase.PROGRESSING else None
        action, reason, new = decide(spec, status, analysis)
        new = dataclasses.replace(new, tick=status.tick + 1, updated=self.clock())
        self.log.append(Decision(
            tick=new.tick, time=new.updated, action=action, reason=reason, phase_before=status.phase.value,
            phase_after=new.phase.value, weight_before=status.canary_weight, weight_after=new.canary_weight,
            analysis=analysis.to_dict() if analysis else None, status_after=new.to_dict(),
        ))
        self.router.set_weights(weights_for(spec, new))
        self.store.save(spec, new)
        return new

    def status(self) -> tuple[CanarySpec, CanaryStatus]:
        return self.store.load()
