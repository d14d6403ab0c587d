"""Blue-green switch: validate the target colour, switch the router, watch it through the validation window,
switch back on failure. Every step is logged with its evidence (``switch_log.jsonl``).

Example:
    result = switch_traffic(router, SwitchSpec(from_colour="blue", to_colour="green", model="bert_icd",
                                               validation_time_s=600, golden_file=Path("golden.json")))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from icd.errors import UserError
from icd.rollout.router_log import AccessLogReader
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.validation import ValidationSpec, validate_deployment

DEFAULT_WATCH_INTERVAL_S = 5.0
DEFAULT_PRECHECK_S = 10.0


class SwitchOutcome(str, Enum):
    """How a blue-green switch ended."""

    REFUSED = "refused"
    """The target failed validation before the switch; the router was not touched."""
    SWITCHED = "switched"
    """The target took all traffic and stayed healthy through the validation window."""
    ROLLED_BACK = "rolled back"
    """The target failed while being watched; traffic was switched back."""


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


@dataclass
class SwitchResult:
    outcome: SwitchOutcome
    reason: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome.value}


def _endpoint(router: NginxRouter, colour: str) -> str:
    upstreams = router.spec.upstreams
    if colour not in upstreams:
        raise UserError(f"colour {colour!r} is not an upstream of the router (have {sorted(upstreams)})")
    return f"http://{upstreams[colour][0]}"


def watch_once(router: NginxRouter, reader: AccessLogReader, spec: SwitchSpec, since: float) -> tuple[bool, str]:
    """One watch step: the target answers ready, and the router's window meets the error rate / p95 SLO."""
    endpoint = _endpoint(router, spec.to_colour)
    try:
        ready = httpx.get(f"{endpoint}/v2/models/{spec.model}/ready", timeout=2).status_code == 200
    except httpx.HTTPError as exc:
        return False, f"{spec.to_colour} not reachable: {type(exc).__name__}"
    if not ready:
        return False, f"{spec.to_colour} model {spec.model} not ready"
    window = [r for r in reader.since(since) if r.colour == spec.to_colour]
    if len(window) < spec.min_router_samples:
        return True, f"{spec.to_colour} ready; {len(window)} routed requests (too few to judge latency)"
    errors = sum(r.is_error for r in window) / len(window)
    p95_ms = float(np.percentile([r.request_time_s for r in window], 95)) * 1e3
    ok = errors <= spec.max_error_rate and p95_ms <= spec.slo_p95_ms
    return ok, f"{spec.to_colour}: {len(window)} requests, errors {errors:.2%}, p95 {p95_ms:.1f} ms"


def switch_traffic(
    router: NginxRouter,
    spec: SwitchSpec,
    log_path: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SwitchResult:
    """Validate ``to_colour``; switch; watch for ``validation_time_s``; switch back on any failed watch step."""
    events: list[dict[str, Any]] = []

    def log(event: str, **data: Any) -> None:
        entry = {"t": time.time(), "event": event, **data}
        events.append(entry)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    if router.spec.active != spec.from_colour:
        raise UserError(f"router's active colour is {router.spec.active!r}, not --from {spec.from_colour!r}")
    report = validate_deployment(ValidationSpec(
        _endpoint(router, spec.to_colour), spec.model, test_duration_s=spec.precheck_duration_s,
        slo_p95_ms=spec.slo_p95_ms, max_error_rate=spec.max_error_rate, golden_file=spec.golden_file,
        model_repository=spec.model_repository))
    log("validation", passed=report.passed, report=report.to_dict())
    if not report.passed:
        failed = [c.name for c in report.checks if not c.passed]
        return SwitchResult(SwitchOutcome.REFUSED, f"{spec.to_colour} failed validation: {failed}", events)
    reader = AccessLogReader(router.access_log)
    reader.poll()
    router.switch(spec.to_colour)
    switched_at = time.time()
    log("switched", to=spec.to_colour, generation=router.spec.generation)
    deadline = time.monotonic() + spec.validation_time_s
    while time.monotonic() < deadline:
        sleep(min(spec.watch_interval_s, max(0.0, deadline - time.monotonic())))
        ok, detail = watch_once(router, reader, spec, max(switched_at, time.time() - spec.watch_interval_s))
        log("watch", ok=ok, detail=detail)
        if not ok:
            router.switch(spec.from_colour)
            log("switched back", to=spec.from_colour, generation=router.spec.generation)
            return SwitchResult(SwitchOutcome.ROLLED_BACK, detail, events)
    return SwitchResult(SwitchOutcome.SWITCHED, f"{spec.to_colour} healthy for {spec.validation_time_s:g}s", events)
