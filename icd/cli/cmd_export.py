"""``icd export-triton``: a run → a Triton model repository.

The guide's ``python scripts/export_triton_model.py --input-dir RUN --model-name bert_icd --output-dir
deploy/triton/models`` is the same command as ``icd export-triton``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

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
    from icd.stack.triton_service import load_into_running_stacks  # a running `icd stack` serving output_dir

    lines, loaded = load_into_running_stacks(output_dir, options.model_name)
    for line in lines:
        typer.echo(line)
    if not loaded:
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("export-triton")(export_triton)
