"""`icd` subcommands of this stage (see icd/cli/main.py for the list)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
