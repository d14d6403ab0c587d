"""Entry point of the ``icd`` command (also ``python -m icd.cli.main``).

Subcommands live in one module per stage; each module exposes ``register(app)``. A :class:`icd.errors.UserError`
raised anywhere becomes one line on stderr and exit code 2 — never a stack trace for a user mistake.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
import typer._click.exceptions

from icd.errors import UserError

# typer ships its own copy of click (typer._click); accept both, whichever raised.
_CLICK_ERRORS = (typer._click.exceptions.ClickException, click.ClickException)
_CLICK_ABORTS = (typer.Abort, click.exceptions.Abort)

# One module per stage, in data-flow order.
COMMAND_MODULES = (
    "icd.cli.cmd_config",    # config show
    "icd.cli.cmd_models",    # models list|fetch
    "icd.cli.cmd_optimize",  # run, pair
    "icd.cli.cmd_permute_nm",  # permute-nm
    "icd.cli.cmd_serve",     # export-triton, serve
    "icd.cli.cmd_load",      # bench, simulate
    "icd.cli.cmd_monitor",   # monitor up|down, status
    "icd.cli.cmd_rollout",   # router, ab, canary, validate, switch
    "icd.cli.cmd_ops",       # verify, keygen, encrypt, logs, trace, optimize-instances, compress
    "icd.cli.cmd_demo",      # demo
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="icd",
        help="Iterative layout co-design: optimize a transformer, serve it on Triton, monitor and roll it out.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``UserError`` → 2 with a one-line message)."""
    app = build_app()
    try:
        rc = app(args=argv, prog_name="icd", standalone_mode=False)
    except UserError as exc:
        print(f"icd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("icd: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit / sys.exit inside commands
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _CLICK_ERRORS as exc:  # usage errors: click's own message, exit 2
        exc.show()
        return exc.exit_code
    except _CLICK_ABORTS:
        print("icd: aborted", file=sys.stderr)
        return 130
    # standalone_mode=False: click returns typer.Exit's code (or the command's return value)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
