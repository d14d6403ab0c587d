"""``icd stack up|down|restart|logs|ps``: a compose file's services as local processes, the docker-compose way.

``up`` checks every port it will bind first (a taken one → one line naming the service, the port and the
variable that sets it; nothing started), then starts the services in dependency order (Triton, Alertmanager,
Prometheus, the dashboard, the router). If one fails, everything this ``up`` started is stopped and its records
removed before the error is reported, so the state folder never describes a service that is not running. A
service that already runs is left as it is (docker-compose's "up-to-date"). ``restart`` stops a service and
starts it again from the compose file *and the environment as they are now* (so ``export TRITON_LOG_VERBOSE=1``
before ``icd stack restart triton`` takes effect).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from icd.errors import ConfigError, UserError
from icd.io.ports import port_in_use
from icd.stack import monitor_services, router_service, triton_service
from icd.stack.compose_file import ROUTER_SERVICE, ComposeProject
from icd.stack.state import ServiceRecord, StackState


class ServiceKind(str, Enum):
    """What runs a compose service here, in start order."""

    TRITON = "triton"
    """An NGC ``tritonserver`` image → the bundled ``tritonserver``."""
    ALERTMANAGER = "alertmanager"
    """``prom/alertmanager`` → Debian's ``prometheus-alertmanager``."""
    PROMETHEUS = "prometheus"
    """``prom/prometheus`` → Debian's ``prometheus``."""
    DASHBOARD = "dashboard"
    """``grafana/grafana`` → the icd console dashboard on Grafana's port (Grafana cannot run here)."""
    ROUTER = "router"
    """``x-icd-router`` → nginx router (+ exporter) on the host."""


_ORDER = list(ServiceKind)


class EmbeddedService(Protocol):
    name: str
    ports: dict[str, int]

    def port_variables(self) -> dict[str, str | None]: ...

    def start(self) -> ServiceRecord: ...


def kind_of(project: ComposeProject, name: str) -> ServiceKind:
    """The embedded kind of service ``name`` (by its image).

    Raises:
        ConfigError: no embedded equivalent (e.g. a plain nginx load balancer).
    """
    if name == ROUTER_SERVICE and project.router() is not None:
        return ServiceKind.ROUTER
    image = project.image(name).lower()
    base = image.split("/")[-1]
    if "tritonserver" in image:
        return ServiceKind.TRITON
    if "alertmanager" in base:
        return ServiceKind.ALERTMANAGER
    if base.startswith("prometheus"):
        return ServiceKind.PROMETHEUS
    if base.startswith("grafana"):
        return ServiceKind.DASHBOARD
    raise ConfigError(f"{project.file}: service {name!r} ({image or 'no image'}) has no embedded equivalent "
                      "(embedded: tritonserver, prometheus, alertmanager, grafana, x-icd-router)")


def embedded_service(project: ComposeProject, name: str, state: StackState) -> EmbeddedService:
    """The object that starts service ``name`` of ``project`` here."""
    kind = kind_of(project, name)
    if kind is ServiceKind.TRITON:
        return triton_service.TritonService(project.service(name), state, project.file)
    if kind is ServiceKind.ROUTER:
        return router_service.RouterService(project, project.router(), state)  # type: ignore[arg-type]
    cls = {ServiceKind.PROMETHEUS: monitor_services.PrometheusService,
           ServiceKind.ALERTMANAGER: monitor_services.AlertmanagerService,
           ServiceKind.DASHBOARD: monitor_services.DashboardService}[kind]
    return cls(project, project.service(name, environment=kind is not ServiceKind.DASHBOARD), state)


def stop_record(record: ServiceRecord) -> bool:
    """Stop a recorded service by PID (whatever compose file defined it); True when it was running."""
    kind = ServiceKind(record.kind)
    if kind is ServiceKind.TRITON:
        return triton_service.stop(record)
    if kind is ServiceKind.ROUTER:
        return router_service.stop(record)
    return monitor_services.stop(record)


@dataclass
class UpResult:
    started: list[ServiceRecord] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)


def _selected(project: ComposeProject, names: Sequence[str]) -> list[str]:
    known = project.service_names
    for name in names:
        if name not in known:
            raise ConfigError(f"{project.file}: no service {name!r} (services: {', '.join(known)})")
    chosen = list(names) or known
    return sorted(chosen, key=lambda n: _ORDER.index(kind_of(project, n)))


def check_ports(services: Sequence[EmbeddedService], project: ComposeProject) -> None:
    """Refuse before starting anything when a port is taken or used twice.

    Raises:
        UserError: ``<service>: <role> port <port> is already in use on 127.0.0.1; set <VAR> ...``.
    """
    seen: dict[int, str] = {}
    for service in services:
        variables = service.port_variables()
        for role, port in service.ports.items():
            hint = (f"; set {variables[role]} (environment or {project.folder / '.env'}) to a free port"
                    if variables.get(role) else "")
            if port in seen:
                raise UserError(f"{service.name}: {role} port {port} is also {seen[port]}'s port{hint}")
            seen[port] = service.name
            if port_in_use(port):
                raise UserError(f"{service.name}: {role} port {port} is already in use on 127.0.0.1{hint}")


def up(project: ComposeProject, state: StackState, names: Sequence[str] = (),
       say: Callable[[str], None] = lambda line: None) -> UpResult:
    """Start the selected services (all by default); see the module docstring for the guarantees.

    Raises:
        UserError / ConfigError: a port is taken, a service cannot start (the message names it); nothing stays
            running and no record is left from this call.
    """
    result = UpResult()
    to_start: list[EmbeddedService] = []
    for name in _selected(project, names):
        record = state.read(name)
        if record is not None and record.alive():
            result.up_to_date.append(name)
            continue
        if record is not None:
            stop_record(record)  # its helpers (watcher, exporter) may outlive a crashed main process
            state.remove(name)
        to_start.append(embedded_service(project, name, state))
    check_ports(to_start, project)
    try:
        for service in to_start:
            say(f"starting {service.name} ...")
            try:
                record = service.start()
            except UserError as exc:
                raise type(exc)(f"{service.name}: {exc}") from None
            state.write(record)
            result.started.append(record)
    except BaseException:
        for record in reversed(result.started):
            stop_record(record)
            state.remove(record.service)
        raise
    return result


def down(project: ComposeProject, state: StackState, names: Sequence[str] = ()) -> list[ServiceRecord]:
    """Stop the selected services of this compose file (all by default), last started first; remove records."""
    stopped = []
    for name in reversed(_selected(project, names)):
        record = state.read(name)
        if record is None:
            continue
        if stop_record(record):
            stopped.append(record)
        state.remove(name)
    return stopped


def restart(project: ComposeProject, state: StackState, names: Sequence[str],
            say: Callable[[str], None] = lambda line: None) -> UpResult:
    """Stop then start each named service with the compose file and environment as they are now."""
    if not names:
        raise UserError("restart: name the services to restart (e.g. `icd stack restart triton`)")
    for name in _selected(project, names):
        record = state.read(name)
        if record is not None:
            stop_record(record)
            state.remove(name)
    return up(project, state, names, say)


def find_record(state: StackState, name: str) -> ServiceRecord:
    """The record of a service by its name or its docker-compose container name (``triton_triton_1``).

    Raises:
        UserError: no such service runs in this project (the message lists those that do).
    """
    records = state.records()
    for record in records:
        if name in (record.service, record.container_name):
            return record
    running = ", ".join(r.service for r in records) or "none"
    raise UserError(f"no service {name!r} in the embedded stack {state.project!r} (running: {running}); "
                    "start it with `icd stack up`")


def log_path(state: StackState, name: str) -> Path:
    """The log file of a service (by service or container name)."""
    return Path(find_record(state, name).log_file)
