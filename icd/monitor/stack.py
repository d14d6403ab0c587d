"""``icd monitor up|down``: a local Alertmanager + Prometheus whose PIDs are kept in the state folder.

``up`` starts them detached (their own session) and records ``<state>/monitor.json``; ``down`` (another
process) stops each recorded PID after checking it still runs the same binary, waits for it, and removes the
record. Data, logs and the generated ``prometheus.yml`` stay in ``<state>/prometheus`` and
``<state>/alertmanager``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.monitor.alertmanager_local import ALERTMANAGER_BINARY, AlertmanagerServer
from icd.monitor.paths import RULES_FILE, monitoring_dir
from icd.monitor.process import pid_runs, stop_pid
from icd.monitor.prometheus_config import PrometheusConfig, ScrapeJob, check_duration, check_host_port
from icd.monitor.prometheus_local import PROMETHEUS_BINARY, PrometheusServer
from icd.monitor.rules import with_short_for

STATE_FILE = "monitor.json"


@dataclass
class StackOptions:
    """What ``icd monitor up`` starts.

    Attributes:
        prometheus_port: Prometheus listen port on 127.0.0.1.
        alertmanager_port: Alertmanager listen port; None = no Alertmanager.
        triton_metrics: ``HOST:PORT`` of Triton metrics endpoints.
        load_metrics: ``HOST:PORT`` of load-generator exporters.
        scrape_interval: scrape interval (e.g. 15s; tests 1s).
        evaluation_interval: rule evaluation interval.
        short_for: if set, load a variant of the rules with every ``for:`` set to this (demos/tests).
    """

    prometheus_port: int
    alertmanager_port: int | None
    triton_metrics: Sequence[str] = ()
    load_metrics: Sequence[str] = ()
    router_metrics: Sequence[str] = ()
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    short_for: str | None = None


@dataclass
class StackRecord:
    """Contents of ``monitor.json``."""

    prometheus_pid: int
    prometheus_url: str
    prometheus_config: str
    alertmanager_pid: int | None = None
    alertmanager_url: str | None = None
    scrape_targets: dict[str, list[str]] = field(default_factory=dict)


def build_config(options: StackOptions, rules_file: Path, alertmanager: str | None) -> PrometheusConfig:
    """The generated Prometheus configuration for ``options``."""
    for target in [*options.triton_metrics, *options.load_metrics, *options.router_metrics]:
        check_host_port(target, "scrape target")
    check_duration(options.scrape_interval, "--scrape-interval")
    check_duration(options.evaluation_interval, "--evaluation-interval")
    jobs = [ScrapeJob("prometheus", [f"127.0.0.1:{options.prometheus_port}"])]
    if options.triton_metrics:
        jobs.append(ScrapeJob("triton", list(options.triton_metrics)))
    if options.load_metrics:
        jobs.append(ScrapeJob("load_generator", list(options.load_metrics)))
    if options.router_metrics:
        jobs.append(ScrapeJob("router", list(options.router_metrics)))
    if alertmanager:
        jobs.append(ScrapeJob("alertmanager", [alertmanager]))
    return PrometheusConfig(
        scrape_jobs=jobs,
        rule_files=[rules_file.resolve()],
        alertmanagers=[alertmanager] if alertmanager else [],
        scrape_interval=options.scrape_interval,
        evaluation_interval=options.evaluation_interval,
    )


def read_record(state: Path) -> StackRecord | None:
    """The recorded stack of ``state`` (None when there is none)."""
    path = state / STATE_FILE
    if not path.is_file():
        return None
    try:
        return StackRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a monitor state file ({exc}); remove it") from exc


def up(options: StackOptions, state: Path) -> StackRecord:
    """Start Alertmanager (optional) and Prometheus; record their PIDs in ``state/monitor.json``.

    Raises:
        UserError: a stack recorded in ``state`` still runs, a port is taken, a binary is missing.
    """
    record = read_record(state)
    if record is not None and pid_runs(record.prometheus_pid, PROMETHEUS_BINARY):
        raise UserError(f"monitoring already running (pid {record.prometheus_pid}, {record.prometheus_url}); "
                        f"run `icd monitor down` first")
    rules_file = monitoring_dir() / RULES_FILE
    if options.short_for:
        rules_file = with_short_for(rules_file, state / "prometheus" / "rules_short_for.yml",
                                    check_duration(options.short_for, "--short-for"))
    alertmanager = None
    if options.alertmanager_port is not None:
        alertmanager = AlertmanagerServer(options.alertmanager_port, state / "alertmanager")
    # the whole configuration first: a bad value refuses the stack before any process starts or state is written
    config = build_config(options, rules_file, alertmanager.address if alertmanager else None)
    if alertmanager is not None:
        alertmanager.start()
    prometheus = PrometheusServer(config, options.prometheus_port, state / "prometheus")
    try:
        prometheus.start()
    except UserError:
        if alertmanager:
            alertmanager.stop()
        raise
    record = StackRecord(
        prometheus_pid=prometheus.pid or 0,
        prometheus_url=prometheus.url,
        prometheus_config=str(prometheus.config_file),
        alertmanager_pid=alertmanager.pid if alertmanager else None,
        alertmanager_url=alertmanager.url if alertmanager else None,
        scrape_targets={job.name: list(job.targets) for job in config.scrape_jobs},
    )
    write_json_atomic(state / STATE_FILE, asdict(record))
    return record


def down(state: Path) -> list[str]:
    """Stop the recorded stack of ``state`` by PID and wait for it; returns what was stopped."""
    record = read_record(state)
    if record is None:
        return []
    stopped = []
    if stop_pid(record.prometheus_pid, PROMETHEUS_BINARY):
        stopped.append(f"prometheus (pid {record.prometheus_pid})")
    if record.alertmanager_pid and stop_pid(record.alertmanager_pid, ALERTMANAGER_BINARY):
        stopped.append(f"alertmanager (pid {record.alertmanager_pid})")
    (state / STATE_FILE).unlink(missing_ok=True)
    return stopped
