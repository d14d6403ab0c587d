"""``icd demo``: the main job end to end on the embedded stack (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    config: Path = typer.Option(Path("configs/minilm.json"), "-c", "--config", help="run configuration"),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="folder for the run, models, state and reports"),
    ab_duration: float = typer.Option(30.0, "--ab-duration", help="seconds of A/B traffic"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Optimize → export → serve → monitor → A/B, then stop every server started."""
    from icd.demo.main_job import DemoOptions, run_demo

    run_demo(DemoOptions(config=config, out=out, ab_duration_s=ab_duration, progress=progress))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
