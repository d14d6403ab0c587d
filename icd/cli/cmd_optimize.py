"""``icd run`` (optimize one configuration into a run directory) and ``icd pair`` (dense vs linear vs iterative)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from icd.config import load_config
from icd.config.schema import PipelineMode

ConfigOption = typer.Option(..., "-c", "--config", help="JSON or YAML run configuration", envvar="ICD_CONFIG")
OverrideOption = typer.Option([], "--override", "-o", help="KEY.PATH=VALUE (JSON when it parses), repeatable")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="show progress bars", envvar="ICD_PROGRESS")

COLUMNS = ("variant", "cos_mean", "cos_min", "nn_agreement", "argmax_agreement", "latency_median_ms",
           "latency_p95_ms", "speedup")
HEADERS = {"cos_mean": "cos", "cos_min": "cos-min", "nn_agreement": "NN", "argmax_agreement": "argmax",
           "latency_median_ms": "p50-ms", "latency_p95_ms": "p95-ms", "speedup": "speedup"}
NOT_MEASURED = "—"


def print_rows(console: Console, title: str, rows: list[dict]) -> None:
    table = Table(title=title, caption=f"cos: mean cosine vs dense, NN: nearest-neighbour agreement, p50/p95: "
                                       f"in-process latency; {NOT_MEASURED} = not measured")
    for column in COLUMNS:
        if column == "variant":
            table.add_column(column, no_wrap=True, min_width=10)
        else:
            table.add_column(HEADERS[column], justify="right")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in COLUMNS])
    console.print(table)


def _cell(value) -> str:
    if value is None:
        return NOT_MEASURED
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def run(
    config: Path = ConfigOption,
    override: list[str] = OverrideOption,
    out: Path = typer.Option(..., "--out", help="run directory to write (a previous run there is replaced)"),
    progress: bool = ProgressOption,
) -> None:
    """Optimize the configured model: calibrate → graph → solve → apply → transform → (re-permute) → measure."""
    from icd.pipeline.runner import run_config

    cfg = load_config(config, override)
    console = Console()
    result = run_config(cfg, out, progress=progress)
    print_rows(console, f"icd run {cfg.name} ({result.mode}) → {out}", [v.row(result.dense) for v in result.variants])
    for i, decision in enumerate(result.decisions, start=1):
        console.print(f"iteration {i}: {'accepted' if decision.accepted else 'rolled back'} — {decision.reason}")
    floor = cfg.pipeline.accept.min_cos_mean
    if result.final.fidelity.cos_mean < floor:
        console.print(f"[yellow]note[/yellow]: the final model's held-out cos_mean "
                      f"{result.final.fidelity.cos_mean:.4f} is below pipeline.accept.min_cos_mean={floor}")


def pair(
    config: Path = ConfigOption,
    override: list[str] = OverrideOption,
    out: Path = typer.Option(Path("runs/pair"), "--out", help="folder for the three runs and the comparison"),
    progress: bool = ProgressOption,
) -> None:
    """Run dense, linear and iterative on the same splits; write pair.json + pair.html and print the table."""
    from icd.pipeline.pair import run_pair

    cfg = load_config(config, override)
    rows = run_pair(cfg, out, progress=progress)
    print_rows(Console(), f"icd pair {cfg.name} → {out}", rows)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("pair")(pair)


__all__ = ["PipelineMode", "register"]
