"""``icd export-triton`` (a run → a Triton model repository) and ``icd serve`` (the embedded tritonserver).

The guide's ``python scripts/export_triton_model.py --input-dir RUN --model-name bert_icd --output-dir
deploy/triton/models`` is the same command as ``icd export-triton``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from icd.defaults import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT
from icd.errors import ConfigError


def _int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _options_file(path: Path | None) -> dict[str, Any]:
    """Export options from a JSON/YAML file (keys = ExportOptions fields)."""
    if path is None:
        return {}
    if not path.is_file():
        raise ConfigError(f"--export-config: file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of export options")
    return data


def _build_options(values: dict[str, Any], file_values: dict[str, Any], source: str):
    from pydantic import ValidationError

    from icd.export.options import ExportOptions

    merged = {**file_values, **{k: v for k, v in values.items() if v is not None}}
    try:
        return ExportOptions.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "options"
        raise ConfigError(f"{source}: {where}: {first['msg'].removeprefix('Value error, ')}") from None


def export_triton(
    input_dir: Path = typer.Option(..., "--input-dir", help="run directory (icd run --out)"),
    model_name: str = typer.Option("bert_icd", "--model-name", help="Triton model name (folder)"),
    output_dir: Path = typer.Option(Path("deploy/triton/models"), "--output-dir", help="model repository"),
    baseline: bool = typer.Option(False, "--baseline", help="export the unoptimized model (config.lock.json)"),
    version: int = typer.Option(None, "--version", help="version folder [1]"),
    target: str = typer.Option(None, "--target", help="cpu | gpu [cpu]"),
    platform: str = typer.Option(None, "--platform", help="python | pytorch_libtorch (NGC container only) [python]"),
    max_batch_size: int = typer.Option(None, "--max-batch-size", help="Triton max_batch_size [32]"),
    instance_count: int = typer.Option(None, "--instance-count", help="instances per device [1]"),
    gpus: str = typer.Option(None, "--gpus", help="GPU ids for --target gpu, e.g. 0,1 [0]"),
    preferred_batch_sizes: str = typer.Option(None, "--preferred-batch-sizes", help="e.g. 4,8 [4,8]"),
    max_queue_delay_us: int = typer.Option(None, "--max-queue-delay-us", help="dynamic batching delay [2000]"),
    preserve_ordering: bool = typer.Option(None, "--preserve-ordering/--no-preserve-ordering"),
    priority_levels: int = typer.Option(None, "--priority-levels", help="dynamic batching priorities [0]"),
    dynamic_batching: bool = typer.Option(None, "--dynamic-batching/--no-dynamic-batching"),
    torch_threads: int = typer.Option(None, "--torch-threads", help="torch threads per instance (0 = default)"),
    export_config: Path = typer.Option(None, "--export-config", help="JSON/YAML file of these options"),
) -> None:
    """Export a run to a Triton model repository (config.pbtxt, model.pt, python backend, checksums)."""
    from icd.export.repository import export_model

    flags = {
        "model_name": model_name, "baseline": baseline or None, "version": version, "target": target,
        "platform": platform, "max_batch_size": max_batch_size, "instance_count": instance_count,
        "gpus": _int_list(gpus, "--gpus"),
        "preferred_batch_sizes": _int_list(preferred_batch_sizes, "--preferred-batch-sizes"),
        "max_queue_delay_us": max_queue_delay_us, "preserve_ordering": preserve_ordering,
        "priority_levels": priority_levels, "dynamic_batching": dynamic_batching, "torch_threads": torch_threads,
    }
    options = _build_options(flags, _options_file(export_config), str(export_config or "export options"))
    result = export_model(input_dir, output_dir, options)
    efficiency = "n/a" if result.layout_efficiency is None else f"{result.layout_efficiency:.4f}"
    typer.echo(f"exported {options.model_name} v{options.version} ({'baseline' if options.baseline else 'icd'}, "
               f"{options.platform.value}, {options.target.value}) -> {result.version_dir}")
    typer.echo(f"  files: {', '.join(result.files)}")
    typer.echo(f"  output: {result.output_name} [{result.output_width}]  layout_efficiency: {efficiency}")


def serve(
    model_repository: Path = typer.Option(Path("deploy/triton/models"), "--model-repository", help="model repository"),
    http_port: int = typer.Option(TRITON_HTTP_PORT, "--http-port", envvar="ICD_TRITON_HTTP_PORT"),
    grpc_port: int = typer.Option(TRITON_GRPC_PORT, "--grpc-port", envvar="ICD_TRITON_GRPC_PORT"),
    metrics_port: int = typer.Option(TRITON_METRICS_PORT, "--metrics-port", envvar="ICD_TRITON_METRICS_PORT"),
    model: list[str] = typer.Option([], "--model", help="serve only these models (repeatable; explicit mode)"),
    explicit: bool = typer.Option(False, "--explicit", help="model control mode explicit (load/unload via API)"),
    log_file: Path = typer.Option(None, "--log-file", help="Triton's log (default: a temporary file)"),
    log_verbose: int = typer.Option(0, "--log-verbose", envvar="TRITON_LOG_VERBOSE"),
    timeout_s: float = typer.Option(180.0, "--timeout", help="seconds to wait for readiness"),
    trace_file: Path = typer.Option(None, "--trace-file", envvar="ICD_TRITON_TRACE_FILE",
                                    help="Triton trace output file (Triton 2.51 can only set it at start); "
                                         "`icd trace collect` then turns tracing on per model"),
) -> None:
    """Serve a model repository on the real tritonserver until Ctrl-C or SIGTERM."""
    from icd.serve.repository_scan import check_model_names, repository_models
    from icd.serve.serve_loop import describe, serve_until_signal
    from icd.serve.triton_local import ModelControlMode, TritonServer

    repository_models(model_repository)
    names = check_model_names(model_repository, model)
    mode = ModelControlMode.EXPLICIT if (names or explicit) else ModelControlMode.NONE
    server = TritonServer(
        model_repository, http_port, grpc_port, metrics_port, log_file=log_file, log_verbose=log_verbose,
        model_control_mode=mode, load_models=names or ("*",),
        extra_args=() if trace_file is None else ("--trace-config", f"triton,file={trace_file.resolve()}"),
    )
    typer.echo(f"starting tritonserver on 127.0.0.1 (http {http_port}, grpc {grpc_port}, metrics {metrics_port})")
    server.start(timeout_s=timeout_s)
    try:
        for line in describe(server):
            typer.echo(line)
        typer.echo("ready; Ctrl-C or SIGTERM stops it")
        serve_until_signal(server, typer.echo)
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("export-triton")(export_triton)
    app.command("serve")(serve)
