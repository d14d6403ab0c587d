"""Compose ``prometheus``, ``alertmanager`` and ``grafana`` services on 127.0.0.1.

* Prometheus runs Debian's ``prometheus`` with the compose file's own configuration (the ``--config.file`` it
  mounts, ``deploy/triton/monitoring/prometheus.yml``), its targets translated the way the containers resolve
  them: ``<service>:<container port>`` of this compose project → ``127.0.0.1:<published port>``,
  ``host.docker.internal:P`` → ``127.0.0.1:P``, ``localhost:9090`` → Prometheus itself; the rule files it mounts;
  the retention of its command line. The icd console templates are served at ``/consoles/``.
* Alertmanager runs Debian's ``prometheus-alertmanager`` with the mounted ``alertmanager.yml``.
* Grafana cannot run here (no package of it exists for this host): its port serves the icd console dashboard
  instead (:mod:`icd.stack.dashboard`: ``/`` redirects to Prometheus' ``/consoles/icd_overview.html``; Grafana's
  ``/api/health`` answers), so ``open http://localhost:3000`` opens the same panels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from icd.errors import ConfigError, UserError
from icd.monitor.alertmanager_local import ALERTMANAGER_BINARY, AlertmanagerServer
from icd.monitor.paths import CONSOLE_PAGE
from icd.monitor.process import LocalProcess, stop_pid
from icd.monitor.prometheus_config import PrometheusConfig, ScrapeJob
from icd.monitor.prometheus_local import PROMETHEUS_BINARY, PrometheusServer
from icd.stack.compose_file import ComposeProject, ComposeService
from icd.stack.state import ServiceRecord, StackState
from icd.stack.volumes import host_path

DASHBOARD_MODULE = "icd.stack.dashboard"
GRAFANA_PORT = 3000
PROMETHEUS_CONTAINER_PORT = 9090
ALERTMANAGER_CONTAINER_PORT = 9093
_HOST_GATEWAY = "host.docker.internal"


def _flag(command: tuple[str, ...], name: str) -> str | None:
    prefix = f"--{name}="
    return next((arg[len(prefix):] for arg in command if arg.startswith(prefix)), None)


class _Service:
    """Shared parts: the compose service, its published port, its record."""

    kind = ""
    container_port = 0

    def __init__(self, project: ComposeProject, service: ComposeService, state: StackState) -> None:
        self.project = project
        self.service = service
        self.name = service.name
        self.state = state
        port = service.host_port(self.container_port)
        if port is None:
            raise ConfigError(f"{project.file}: services.{service.name}.ports: container port "
                              f"{self.container_port} is not published")
        self.ports = {"web": port}

    def port_variables(self) -> dict[str, str | None]:
        return {"web": next((p.variable for p in self.service.ports if p.host == self.ports["web"]), None)}

    def _mounted(self, container_path: str) -> Path:
        return Path(host_path(container_path, self.service.volumes, self.state.volume_dir))

    def _record(self, pid: int | None, log_file: Path, url: str, offset: int) -> ServiceRecord:
        return ServiceRecord(service=self.service.name, kind=self.kind, project=self.state.project,
                             compose_file=str(self.project.file), pids=[pid or 0], ports=dict(self.ports),
                             log_file=str(log_file), urls={"web": url}, started=time.time(), log_offset=offset)


def _offset(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


class PrometheusService(_Service):
    kind = "prometheus"
    container_port = PROMETHEUS_CONTAINER_PORT

    def _target(self, target: str) -> str:
        host, _, port = target.rpartition(":")
        if host == _HOST_GATEWAY:
            router = self.project.router()
            if router and router.exporter_port and int(port) == self.project.default_router_exporter_port():
                return f"127.0.0.1:{router.exporter_port}"  # the router exporter moved with ROUTER_EXPORTER_PORT
            return f"127.0.0.1:{port}"
        if host == "localhost":
            return f"127.0.0.1:{self.ports['web']}" if int(port) == self.container_port else f"127.0.0.1:{port}"
        if host in self.project.service_names:
            published = self.project.service(host).host_port(int(port))
            if published is None:
                raise ConfigError(f"{self.project.file}: Prometheus scrapes {target} but services.{host} does not "
                                  f"publish port {port}")
            return f"127.0.0.1:{published}"
        return target

    def config(self) -> PrometheusConfig:
        """The mounted ``prometheus.yml`` with its targets and rule files as this host sees them."""
        source = self._mounted(_flag(self.service.command, "config.file") or "/etc/prometheus/prometheus.yml")
        try:
            doc = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source}: cannot read the Prometheus configuration ({exc})") from None
        container_dir = str(Path(_flag(self.service.command, "config.file") or "/etc/prometheus/x").parent)
        rules = [self._mounted(r if r.startswith("/") else f"{container_dir}/{r}") for r in doc.get("rule_files", [])]
        jobs = [ScrapeJob(job["job_name"], [self._target(t) for sc in job.get("static_configs", [])
                                            for t in sc.get("targets", [])], job.get("metrics_path", "/metrics"))
                for job in doc.get("scrape_configs", [])]
        managers = [self._target(t) for am in doc.get("alerting", {}).get("alertmanagers", [])
                    for sc in am.get("static_configs", []) for t in sc.get("targets", [])]
        glob = doc.get("global", {})
        return PrometheusConfig(scrape_jobs=jobs, rule_files=rules, alertmanagers=managers,
                                scrape_interval=glob.get("scrape_interval", "15s"),
                                evaluation_interval=glob.get("evaluation_interval", "15s"),
                                external_labels=dict(glob.get("external_labels", {"stack": "icd"})))

    def start(self) -> ServiceRecord:
        workdir = self.state.work_dir(self.service.name)
        server = PrometheusServer(self.config(), self.ports["web"], workdir,
                                  retention=_flag(self.service.command, "storage.tsdb.retention.time") or "15d")
        offset = _offset(server.log_file)
        server.start()
        return self._record(server.pid, server.log_file, server.url, offset)


class AlertmanagerService(_Service):
    kind = "alertmanager"
    container_port = ALERTMANAGER_CONTAINER_PORT

    def start(self) -> ServiceRecord:
        config = self._mounted(_flag(self.service.command, "config.file") or "/etc/alertmanager/alertmanager.yml")
        server = AlertmanagerServer(self.ports["web"], self.state.work_dir(self.service.name), config)
        offset = _offset(server.log_file)
        server.start()
        return self._record(server.pid, server.log_file, server.url, offset)


class DashboardService(_Service):
    """Grafana's place: the icd console dashboard of this project's Prometheus."""

    kind = "dashboard"
    container_port = GRAFANA_PORT

    def _prometheus_url(self) -> str:
        for name in self.project.service_names:
            if name != "router" and "prometheus" in self.project.image(name).split("/")[-1]:
                port = self.project.service(name).host_port(PROMETHEUS_CONTAINER_PORT)
                if port is not None:
                    return f"http://127.0.0.1:{port}"
        raise ConfigError(f"{self.project.file}: services.{self.service.name} needs a prometheus service to show")

    def start(self) -> ServiceRecord:
        log = self.state.log_file(self.service.name)
        offset = _offset(log)
        port = self.ports["web"]
        target = f"{self._prometheus_url()}/consoles/{CONSOLE_PAGE}"
        process = LocalProcess("dashboard", [sys.executable, "-m", DASHBOARD_MODULE, "--port", str(port),
                                             "--target", target], log, f"http://127.0.0.1:{port}/api/health", port)
        process.start()
        record = self._record(process.pid, log, f"http://127.0.0.1:{port}", offset)
        record.urls["dashboard"] = target
        return record


def stop(record: ServiceRecord) -> bool:
    """Stop a recorded monitoring service by PID (checked against its program first)."""
    program = {"prometheus": PROMETHEUS_BINARY, "alertmanager": ALERTMANAGER_BINARY,
               "dashboard": DASHBOARD_MODULE}.get(record.kind)
    if program is None:
        raise UserError(f"{record.service}: unknown service kind {record.kind!r} in its record")
    return stop_pid(record.pids[0], program) if record.pids else False
