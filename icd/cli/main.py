"""Entry point of the ``icd`` command (also ``python -m icd.cli.main``).

Subcommands live in one module per stage; each module exposes ``register(app)``. A :class:`icd.errors.UserError`
raised anywhere becomes one line on stderr and exit code 2 — never a stack trace for a user mistake; so does an
``OSError`` about a path (an output path that is a directory, a parent that is a file, no permission, a full disk):
the path and the reason.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

from icd.errors import EXIT_USER_ERROR, UserError

# typer ships its own copy of click: its usage errors derive from the public ``typer.TyperException``; commands
# that use click directly raise ``click.ClickException``. Accept both, whichever raised.
_CLICK_ERRORS = (typer.TyperException, click.ClickException)
_CLICK_ABORTS = (typer.Abort, click.exceptions.Abort)

# One module per stage, in data-flow order.
COMMAND_MODULES = (
    "icd.cli.cmd_config",    # config show
    "icd.cli.cmd_models",    # models list|fetch
    "icd.cli.cmd_optimize",  # run, pair
    "icd.cli.cmd_permute_nm",  # permute-nm
    "icd.cli.cmd_export",    # export-triton
    "icd.cli.cmd_serve",     # serve
    "icd.cli.cmd_stack",     # stack up|down|restart|logs|ps|config (the compose stacks, embedded)
    "icd.cli.cmd_load",      # bench, simulate
    "icd.cli.cmd_monitor",   # monitor up|down, status
    "icd.cli.cmd_rollout",   # router, ab, canary, validate, switch
    "icd.cli.cmd_ops",       # verify, keygen, encrypt, logs, trace, compress
    "icd.cli.cmd_tune",      # tune, optimize-instances, tune-report
    "icd.cli.cmd_k8s",       # k8s check, k8s render
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


def _given_value(exc: Exception, argv: list[str]) -> str | None:
    """The value the user gave the option a usage error is about (click's conversion messages omit it): from the
    command line, else from the option's environment variable."""
    param = getattr(exc, "param", None)
    opts = getattr(param, "opts", None) or []
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(opt + "="):
                return arg[len(opt) + 1:]
    envvar = getattr(param, "envvar", None)
    for name in [envvar] if isinstance(envvar, str) else list(envvar or []):
        if name in os.environ:
            return os.environ[name]
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_line(exc: Exception, argv: list[str]) -> str:
    """One line for a usage error: click's message, the value given, the command and where help is."""
    message = _one_line(exc.format_message())
    value = _given_value(exc, argv)
    if value is not None and repr(value) not in message:
        message += f" (got {value!r})"
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "icd"
    return f"{message} (try '{path} --help')"


def _os_error_line(exc: OSError) -> str:
    """``PATH: reason`` (``PATH -> OTHER: reason`` for a rename) for a file-system error."""
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    reason = exc.strerror or _one_line(exc)
    if isinstance(exc, FileExistsError):  # what a directory to be made (mkdir exist_ok) says of a file in its place
        reason += " and is not a directory"
    return f"{where}: {reason}"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``UserError`` → 2 with a one-line message)."""
    app = build_app()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = app(args=argv, prog_name="icd", standalone_mode=False)
    except UserError as exc:
        print(f"icd: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("icd: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit / sys.exit inside commands
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _CLICK_ERRORS as exc:  # usage errors: one line naming the option and value, exit 2
        print(f"icd: error: {_usage_line(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except _CLICK_ABORTS:
        print("icd: aborted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path the user named cannot be read or written: that path and why, like cp or mv
        if exc.filename is None:
            raise
        print(f"icd: error: {_os_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    # standalone_mode=False: click returns typer.Exit's code (or the command's return value)
    if rc == 130:  # typer turns a KeyboardInterrupt inside a command into Exit(130) before it reaches this frame
        print("icd: interrupted", file=sys.stderr)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
