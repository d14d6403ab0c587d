"""`icd stack up|down|restart|logs|ps|status|config` — the compose stacks of deploy/triton as local processes.

The guide's Docker lines and their embedded commands (docs/guide.md):

    docker-compose up -d                              icd stack up -d
    docker-compose -f docker-compose.green.yml up -d  icd stack -f docker-compose.green.yml up -d
    docker-compose restart triton                     icd stack restart triton
    docker logs triton_triton_1                       icd stack logs triton_triton_1
    docker-compose ps / down                          icd stack ps / icd stack down
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_COMPOSE = Path("deploy/triton/docker-compose.yml")
COMPOSE_NAME = "docker-compose.yml"

stack_app = typer.Typer(help="The compose stacks of deploy/triton as local processes on 127.0.0.1 "
                             "(Triton, Prometheus, Alertmanager, dashboard, router).", no_args_is_help=True)


def resolve_compose_file(file: str | None) -> Path:
    """The compose file: ``-f`` as given (a path, or a name like ``green`` → ``docker-compose.green.yml``),
    relative to the current folder or to deploy/triton; default ``./docker-compose.yml``, else deploy/triton's.

    Raises:
        ConfigError: no such file.
    """
    from icd.errors import ConfigError

    if file is None:
        candidates = [Path(COMPOSE_NAME), DEFAULT_COMPOSE]
    else:
        name = file if file.endswith((".yml", ".yaml")) or "/" in file else f"docker-compose.{file}.yml"
        candidates = [Path(name), DEFAULT_COMPOSE.parent / name]
    for path in candidates:
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in candidates)
    raise ConfigError(f"compose file not found: {tried} (pass -f FILE)")


def _context(ctx: typer.Context):
    from icd.monitor.paths import state_dir
    from icd.stack.compose_file import load_compose
    from icd.stack.state import StackState

    options = ctx.obj
    project = load_compose(resolve_compose_file(options["file"]), options["project_name"])
    return project, StackState(state_dir(options["state_dir"]).resolve(), project.name)


@stack_app.callback()
def stack_options(
    ctx: typer.Context,
    file: Annotated[Optional[str], typer.Option(  # noqa: UP007 - typer needs Optional
        "-f", "--file", help="Compose file (or a name: green → docker-compose.green.yml).")] = None,
    project_name: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "-p", "--project-name", help="Project name (default: the compose file's folder, as docker-compose).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="State folder; default $ICD_STATE_DIR or the nearest .icd.")] = None,
) -> None:
    ctx.obj = {"file": file, "project_name": project_name, "state_dir": state_dir}


def _echo_triton(record) -> None:
    from icd.stack.triton_service import states

    for state in states(record):
        typer.echo(f"  {state.line()}")


@stack_app.command("up")
def stack_up(
    ctx: typer.Context,
    services: Annotated[Optional[list[str]], typer.Argument(help="Services (default: all).")] = None,  # noqa: UP007
    detach: Annotated[bool, typer.Option("-d", "--detach", help="Accepted for docker-compose parity: "
                                                               "services always run in the background.")] = False,
) -> None:
    """Start the compose file's services (all by default) as local processes; exit 1 if a model is not READY."""
    from icd.stack.compose_stack import up

    project, state = _context(ctx)
    typer.echo(f"stack {project.name} from {project.file} (state {state.folder})")
    result = up(project, state, services or [], typer.echo)
    for name in result.up_to_date:
        typer.echo(f"{name} is up-to-date")
    _report(result.started)


def _report(records) -> None:
    from icd.stack.triton_service import states

    not_ready = []
    for record in records:
        urls = ", ".join(f"{k} {v}" for k, v in record.urls.items() if k not in ("repository", "workdir"))
        typer.echo(f"{record.service:13s} up (pid {record.pids[0]}): {urls}")
        if record.kind == "triton":
            rows = states(record)
            for row in rows:
                typer.echo(f"  {row.line()}")
            if not rows:
                typer.echo(f"  no model in {record.urls['repository']} yet: models exported there are loaded "
                           "when their folder appears")
            not_ready += [f"{record.service}/{r.name}" for r in rows if not r.ready]
    if not_ready:
        typer.echo(f"not ready: {', '.join(not_ready)} (reasons above)")
        raise SystemExit(1)


@stack_app.command("down")
def stack_down(
    ctx: typer.Context,
    services: Annotated[Optional[list[str]], typer.Argument(help="Services (default: all).")] = None,  # noqa: UP007
) -> None:
    """Stop the compose file's services (by PID, waited for) and remove their records."""
    from icd.stack.compose_stack import down

    project, state = _context(ctx)
    stopped = down(project, state, services or [])
    typer.echo("stopped: " + ", ".join(f"{r.service} (pid {r.pids[0]})" for r in stopped) if stopped
               else "nothing running")
    others = [r for r in state.records() if Path(r.compose_file) != project.file]
    for record in others:
        typer.echo(f"still running from {Path(record.compose_file).name}: {record.service} "
                   f"(`icd stack -f {Path(record.compose_file).name} down`)")


@stack_app.command("restart")
def stack_restart(
    ctx: typer.Context,
    services: Annotated[list[str], typer.Argument(help="Services to restart (e.g. triton).")],
) -> None:
    """Stop and start services with the compose file and environment as they are now (env changes apply)."""
    from icd.stack.compose_stack import restart

    project, state = _context(ctx)
    _report(restart(project, state, services, typer.echo).started)


@stack_app.command("logs")
def stack_logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Service or container name (triton, triton_triton_1).")],
    tail: Annotated[int, typer.Option(help="Only the last N lines (0 = all).")] = 0,
) -> None:
    """Print a service's log (stdout + stderr, every start), like `docker logs`."""
    import sys

    from icd.stack.compose_stack import log_path

    _, state = _context(ctx)
    path = log_path(state, service)
    data = path.read_bytes() if path.is_file() else b""
    if tail > 0:
        data = b"\n".join(data.rstrip(b"\n").split(b"\n")[-tail:]) + b"\n"
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@stack_app.command("ps")
@stack_app.command("status", help="Same as `ps`.")
def stack_ps(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Records as JSON.")] = False,
) -> None:
    """List the project's services (every compose file of it): state, pid, ports, model states."""
    _, state = _context(ctx)
    records = state.records()
    if as_json:
        typer.echo(json.dumps([{**asdict(r), "running": r.alive()} for r in records], indent=2))
        return
    if not records:
        typer.echo(f"no service of stack {state.project!r} is running")
        return
    for record in records:
        ports = ", ".join(f"{k} {v}" for k, v in record.ports.items())
        typer.echo(f"{record.container_name:28s} {'Up' if record.alive() else 'Exit'}  pid {record.pids[0]}  {ports}")
        if record.kind == "triton" and record.alive():
            _echo_triton(record)


@stack_app.command("config")
def stack_config(ctx: typer.Context) -> None:
    """Print the services and host ports this compose file gives on the embedded stack."""
    from icd.stack.compose_stack import embedded_service, kind_of

    project, state = _context(ctx)
    typer.echo(f"project {project.name}: {project.file}")
    for name in project.service_names:
        service = embedded_service(project, name, state)
        ports = ", ".join(f"{role} {port}" for role, port in service.ports.items())
        typer.echo(f"  {name:13s} {kind_of(project, name).value:12s} {ports}")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.add_typer(stack_app, name="stack")
