"""``icd serve``: serve a model repository on the embedded tritonserver (``icd export-triton`` is in cmd_export)."""

from __future__ import annotations

from pathlib import Path

import typer

from icd.defaults import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT


def serve(
    model_repository: Path = typer.Option(Path("deploy/triton/models"), "--model-repository", help="model repository"),
    http_port: int = typer.Option(TRITON_HTTP_PORT, "--http-port", envvar="ICD_TRITON_HTTP_PORT", min=1, max=65535),
    grpc_port: int = typer.Option(TRITON_GRPC_PORT, "--grpc-port", envvar="ICD_TRITON_GRPC_PORT", min=1, max=65535),
    metrics_port: int = typer.Option(TRITON_METRICS_PORT, "--metrics-port", envvar="ICD_TRITON_METRICS_PORT", min=1,
                                     max=65535),
    model: list[str] = typer.Option([], "--model", help="serve only these models (repeatable; explicit mode)"),
    explicit: bool = typer.Option(False, "--explicit", help="model control mode explicit (load/unload via API)"),
    log_file: Path = typer.Option(None, "--log-file", help="Triton's log (default: a temporary file)"),
    log_verbose: int = typer.Option(0, "--log-verbose", envvar="TRITON_LOG_VERBOSE"),
    timeout_s: float = typer.Option(180.0, "--timeout", help="seconds to wait for readiness"),
    trace_file: Path = typer.Option(None, "--trace-file", envvar="ICD_TRITON_TRACE_FILE",
                                    help="Triton trace output file (Triton 2.51 can only set it at start); "
                                         "`icd trace collect` then turns tracing on per model"),
) -> None:
    """Serve a model repository on the real tritonserver until Ctrl-C or SIGTERM.

    Prints "ready" only when every model is READY; a model that is not shows Triton's reason; when none is,
    the server is stopped and the command exits 2 with each reason.
    """
    from icd.serve.repository_scan import check_model_names, repository_models
    from icd.serve.serve_loop import describe, readiness_line, serve_until_signal, server_model_states
    from icd.serve.trace_file import prepare_trace_file
    from icd.serve.triton_local import ModelControlMode, TritonServer

    repository_models(model_repository)
    names = check_model_names(model_repository, model)
    trace = None if trace_file is None else prepare_trace_file(trace_file)
    mode = ModelControlMode.EXPLICIT if (names or explicit) else ModelControlMode.NONE
    server = TritonServer(
        model_repository, http_port, grpc_port, metrics_port, log_file=log_file, log_verbose=log_verbose,
        model_control_mode=mode, load_models=names or ("*",),
        extra_args=() if trace is None else ("--trace-config", f"triton,file={trace}"),
    )
    typer.echo(f"starting tritonserver on 127.0.0.1 (http {http_port}, grpc {grpc_port}, metrics {metrics_port})")
    from icd.runtimes.threads import repository_budget

    typer.echo(repository_budget(model_repository).describe())
    server.start(timeout_s=timeout_s)
    try:
        for line in describe(server):
            typer.echo(line)
        states = [s for s in server_model_states(server) if not names or s.name in names]
        serve_until_signal(server, typer.echo, ready_line=readiness_line(states))
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("serve")(serve)
