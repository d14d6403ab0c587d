"""`icd monitor up|down` (local Prometheus + Alertmanager) and `icd status` (the guide's KPI table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from icd.defaults import ALERTMANAGER_PORT, LOOPBACK, PROMETHEUS_PORT
from icd.errors import UserError
from icd.io.urls import url_option

EXIT_KPI_BREACHED = 1
"""`icd status` exit code when at least one KPI is breached ("no data" is not a breach)."""

PROMETHEUS_URL_ENV = "ICD_PROMETHEUS_URL"

monitor_app = typer.Typer(help="Local Prometheus + Alertmanager scraping Triton (Debian packages, 127.0.0.1).",
                          no_args_is_help=True)


def _state_dir(explicit: Path | None) -> Path:
    from icd.monitor.paths import state_dir

    return state_dir(explicit)


@monitor_app.command("up")
def monitor_up(
    prometheus_port: Annotated[int, typer.Option(
        envvar="ICD_PROMETHEUS_PORT", min=1, max=65535, help="Prometheus port on 127.0.0.1.")] = PROMETHEUS_PORT,
    alertmanager_port: Annotated[int, typer.Option(
        envvar="ICD_ALERTMANAGER_PORT", min=0, max=65535, help="Alertmanager port on 127.0.0.1 (0 = no Alertmanager).")]
    = ALERTMANAGER_PORT,
    triton_metrics: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007 - typer needs Optional
        envvar="ICD_TRITON_METRICS",
        help="Triton metrics endpoint HOST:PORT (repeatable; default 127.0.0.1:8002).")] = None,
    load_metrics: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        envvar="ICD_LOAD_METRICS", help="Load-generator exporter HOST:PORT (repeatable).")] = None,
    router_metrics: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        envvar="ICD_ROUTER_METRICS",
        help="Router exporter HOST:PORT (repeatable; `icd router up` serves one on 127.0.0.1:9180); the canary "
             "analysis queries its icd_router_* series.")] = None,
    scrape_interval: Annotated[str, typer.Option(envvar="ICD_SCRAPE_INTERVAL", help="Scrape interval.")] = "15s",
    evaluation_interval: Annotated[str, typer.Option(
        envvar="ICD_EVALUATION_INTERVAL", help="Rule evaluation interval.")] = "15s",
    short_for: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Demo/test only: load the rules with every alert's 'for:' set to this duration.")] = None,
    state_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="State folder (pids, logs, data); default $ICD_STATE_DIR or .icd.")] = None,
) -> None:
    """Start Alertmanager and Prometheus (rules, consoles) scraping Triton; record their PIDs."""
    from icd.monitor.paths import CONSOLE_PAGE
    from icd.monitor.prometheus_config import check_duration, check_host_port
    from icd.monitor.stack import StackOptions, up

    # every value checked before anything starts: a bad one leaves no process and no state behind
    for flag, value in (("--scrape-interval", scrape_interval), ("--evaluation-interval", evaluation_interval),
                        ("--short-for", short_for)):
        if value is not None:
            check_duration(value, flag)
    for flag, targets in (("--triton-metrics", triton_metrics), ("--load-metrics", load_metrics),
                          ("--router-metrics", router_metrics)):
        for target in targets or ():
            check_host_port(target, flag)
    options = StackOptions(
        prometheus_port=prometheus_port,
        alertmanager_port=alertmanager_port or None,
        triton_metrics=triton_metrics or [f"{LOOPBACK}:8002"],
        load_metrics=load_metrics or [],
        router_metrics=router_metrics or [],
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        short_for=short_for,
    )
    record = up(options, _state_dir(state_dir))
    typer.echo(f"prometheus   {record.prometheus_url} (pid {record.prometheus_pid}), config {record.prometheus_config}")
    if record.alertmanager_url:
        typer.echo(f"alertmanager {record.alertmanager_url} (pid {record.alertmanager_pid})")
    typer.echo(f"dashboard    {record.prometheus_url}/consoles/{CONSOLE_PAGE}")
    for job, targets in record.scrape_targets.items():
        typer.echo(f"scrape       {job}: {', '.join(targets)}")


@monitor_app.command("down")
def monitor_down(
    state_dir: Annotated[Optional[Path], typer.Option(help="State folder used by `monitor up`.")] = None,  # noqa: UP007
) -> None:
    """Stop the Prometheus and Alertmanager started by `icd monitor up` (by PID) and wait for them."""
    from icd.monitor.stack import down

    stopped = down(_state_dir(state_dir))
    typer.echo("stopped: " + ", ".join(stopped) if stopped else "nothing running")


def _default_prometheus_url(state: Path) -> str:
    from icd.monitor.stack import read_record

    record = read_record(state)
    return record.prometheus_url if record else f"http://{LOOPBACK}:{PROMETHEUS_PORT}"


def status(
    prometheus: Annotated[Optional[str], typer.Option(  # noqa: UP007
        envvar=PROMETHEUS_URL_ENV, callback=lambda value: url_option(value, "--prometheus"),
        help="Prometheus URL (default: the `monitor up` stack, else http://127.0.0.1:9090).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the readings as JSON.")] = False,
    state_dir: Annotated[Optional[Path], typer.Option(help="State folder used by `monitor up`.")] = None,  # noqa: UP007
) -> None:
    """Print the KPI table (metric, current value, threshold, state, action) from live Prometheus.

    Exits 1 when a KPI is breached; "no data" (series absent, e.g. GPU metrics on CPU) is neither OK nor a breach.
    """
    from icd.monitor.client import PrometheusClient, PrometheusQueryError
    from icd.monitor.kpi import any_breached, evaluate_kpis
    from icd.monitor.paths import RULES_FILE, monitoring_dir
    from icd.monitor.rules import load_rules
    from icd.monitor.status_table import render_table

    url = prometheus or _default_prometheus_url(_state_dir(state_dir))
    with PrometheusClient(url) as client:
        try:
            readings = evaluate_kpis(client, load_rules(monitoring_dir() / RULES_FILE))
            targets = client.target_health()
        except PrometheusQueryError as exc:  # the KPI expressions are icd's own: a server that refuses them is odd
            raise UserError(f"--prometheus {url}: Prometheus refused a KPI query ({exc}); is this the Prometheus "
                            "server, and does it run the rules `icd monitor up` generated?") from None
    if as_json:
        typer.echo(json.dumps({"prometheus": url, "targets": targets, "kpis": [r.to_dict() for r in readings]},
                              indent=2))
    else:
        render_table(readings, url, targets)
    if any_breached(readings):
        # SystemExit, not typer.Exit: main() runs click with standalone_mode=False, where typer.Exit's code is
        # returned by app() and lost; SystemExit reaches main()'s handler with its code.
        raise SystemExit(EXIT_KPI_BREACHED)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.add_typer(monitor_app, name="monitor")
    app.command("status")(status)
