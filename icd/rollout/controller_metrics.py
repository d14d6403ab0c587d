"""The canary controller's own Prometheus metrics (Flagger's recorder): weight, phase, failed checks, decisions.

Example:
    recorder = CanaryRecorder(port=9181).start()
    run_controller(scheduler, on_tick=lambda s: recorder.record(spec, s, scheduler.log.last()))
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from icd.defaults import LOOPBACK
from icd.rollout.canary_spec import CanarySpec
from icd.rollout.decision_log import Decision
from icd.rollout.phase import RolloutPhase
from icd.rollout.status_store import CanaryStatus


class CanaryRecorder:
    """Gauges and counters of the rollout, served on ``port`` (or only kept in ``registry`` when port is 0)."""

    def __init__(self, port: int = 0, addr: str = LOOPBACK) -> None:
        self.port, self.addr = port, addr
        self.registry = CollectorRegistry()
        self.weight = Gauge("icd_canary_weight", "Traffic % routed to the canary.", ["canary"], registry=self.registry)
        self.phase = Gauge("icd_canary_phase", "1 for the current rollout phase.", ["canary", "phase"],
                           registry=self.registry)
        self.failed = Gauge("icd_canary_failed_checks", "Failed analyses so far.", ["canary"], registry=self.registry)
        self.decisions = Counter("icd_canary_decisions", "Decisions taken, by action.", ["canary", "action"],
                                 registry=self.registry)
        self._server = None

    def start(self) -> CanaryRecorder:
        if self.port:
            self._server, _ = start_http_server(self.port, addr=self.addr, registry=self.registry)
        return self

    def record(self, spec: CanarySpec, status: CanaryStatus, decision: Decision | None) -> None:
        self.weight.labels(spec.canary).set(status.canary_weight)
        for phase in RolloutPhase:
            self.phase.labels(spec.canary, phase.value).set(1.0 if phase is status.phase else 0.0)
        self.failed.labels(spec.canary).set(status.failed_checks)
        if decision is not None and decision.tick == status.tick:
            self.decisions.labels(spec.canary, decision.action.value).inc()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
