"""``icd config show -c CFG [--override k=v ...]``: print the merged, validated configuration."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from icd.config import load_config

config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)

ConfigOption = typer.Option(..., "-c", "--config", help="JSON or YAML run configuration", envvar="ICD_CONFIG")
OverrideOption = typer.Option([], "--override", "-o", help="KEY.PATH=VALUE (JSON when it parses), repeatable")


@config_app.command("show")
def show(config: Path = ConfigOption, override: list[str] = OverrideOption) -> None:
    """Print the configuration after defaults and overrides, as JSON."""
    cfg = load_config(config, override)
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
