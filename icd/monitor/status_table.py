"""Rendering of the KPI readings as the guide's table (rich)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

from icd.monitor.kpi import KpiReading, KpiState

_STATE_STYLE = {KpiState.OK: "green", KpiState.BREACHED: "bold red", KpiState.NO_DATA: "yellow"}


def render_table(readings: Sequence[KpiReading], source: str, targets: Mapping[str, str] | None = None,
                 console: Console | None = None) -> None:
    """Print metric, current value (worst model/device), threshold, state and action of each KPI, then the
    health of the scrape targets (a target that is down explains 'no data')."""
    table = Table(title=f"ICD KPIs — live from {source}")
    for column in ("Metric", "Current", "Where", "Threshold", "State", "Action"):
        table.add_column(column)
    for r in readings:
        current = r.spec.format_value(r.value) if r.value is not None else "no data"
        table.add_row(r.spec.metric, current, r.where, r.spec.format_threshold(),
                      f"[{_STATE_STYLE[r.state]}]{r.state.value}[/]", r.spec.action)
    console = console or Console()
    if not console.is_terminal:
        console = Console(width=140)  # piped into a file or CI log: do not wrap the table at 80 columns
    console.print(table)
    if targets:
        console.print("scrape targets: " + ", ".join(f"{name} [{'green' if health == 'up' else 'red'}]{health}[/]"
                                                     for name, health in sorted(targets.items())))
    console.print("'no data': the series is absent on this Prometheus (no traffic yet, GPU metrics on a CPU-only "
                  "host, no icd model served) — neither OK nor a breach. Exit code 1 = a KPI is breached.")
