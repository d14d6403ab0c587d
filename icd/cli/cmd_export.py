"""``icd export-triton`` (a run → a Triton model repository) and ``icd profile`` (runtimes × precisions → choice).

The guide's ``python scripts/export_triton_model.py --input-dir RUN --model-name bert_icd --output-dir
deploy/triton/models`` is the same command as ``icd export-triton``.
"""

from __future__ import annotations

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
    from icd.config.loader import read_config_file

    return read_config_file(path, "--export-config")


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
    runtime: str = typer.Option(None, "--runtime", envvar="ICD_EXPORT_RUNTIME",
                                help="torchscript | onnx | openvino [the run's icd profile choice, else torchscript]"),
    precision: str = typer.Option(None, "--precision", help="fp32 | bf16 | int8 [profile choice, else the run's own]"),
    platform: str = typer.Option(None, "--platform", help="python | pytorch_libtorch | onnxruntime_onnx | openvino "
                                                          "(all but python: NGC container only) [python]"),
    max_batch_size: int = typer.Option(None, "--max-batch-size", help="Triton max_batch_size [32]"),
    instance_count: int = typer.Option(None, "--instance-count", help="instances per device [1]"),
    gpus: str = typer.Option(None, "--gpus", help="GPU ids for --target gpu, e.g. 0,1 [0]"),
    preferred_batch_sizes: str = typer.Option(None, "--preferred-batch-sizes", help="e.g. 4,8 [4,8]"),
    max_queue_delay_us: int = typer.Option(None, "--max-queue-delay-us", help="dynamic batching delay [2000]"),
    preserve_ordering: bool = typer.Option(None, "--preserve-ordering/--no-preserve-ordering"),
    priority_levels: int = typer.Option(None, "--priority-levels", help="dynamic batching priorities [0]"),
    dynamic_batching: bool = typer.Option(None, "--dynamic-batching/--no-dynamic-batching"),
    threads: int = typer.Option(None, "--threads", "--torch-threads",
                                help="threads per instance (0 = the thread budget: cores / instances served) [0]"),
    int8_recipe: str = typer.Option(None, "--int8-recipe",
                                    help="OpenVINO int8 recipe: icd_outliers_fused_fp32 | icd_outliers | "
                                         "icd_outliers_fused | nncf_default | ... (docs/int8.md) "
                                         "[icd_outliers_fused_fp32]"),
    trim_padding: int = typer.Option(None, "--trim-padding",
                                     help="python backend: run each batch without its trailing padding, to a "
                                          "multiple of this many tokens (0 = never) [8]"),
    export_config: Path = typer.Option(None, "--export-config", help="JSON/YAML file of these options"),
) -> None:
    """Export a run to a Triton model repository (config.pbtxt, the runtime's artefact, python backend, checksums)."""
    from icd.export.repository import export_model

    flags = {
        "model_name": model_name, "baseline": baseline or None, "version": version, "target": target,
        "platform": platform, "max_batch_size": max_batch_size, "instance_count": instance_count,
        "gpus": _int_list(gpus, "--gpus"),
        "preferred_batch_sizes": _int_list(preferred_batch_sizes, "--preferred-batch-sizes"),
        "max_queue_delay_us": max_queue_delay_us, "preserve_ordering": preserve_ordering,
        "priority_levels": priority_levels, "dynamic_batching": dynamic_batching, "threads": threads,
        "runtime": runtime, "precision": precision, "int8_recipe": int8_recipe, "trim_padding": trim_padding,
    }
    options = _build_options(flags, _options_file(export_config), str(export_config or "export options"))
    result = export_model(input_dir, output_dir, options)
    efficiency = "n/a" if result.layout_efficiency is None else f"{result.layout_efficiency:.4f}"
    check = result.verification
    typer.echo(f"exported {options.model_name} v{options.version} ({'baseline' if options.baseline else 'icd'}, "
               f"{result.variant.name} from {result.variant_source}; {options.platform.value}, {options.target.value}) "
               f"-> {result.version_dir}")
    typer.echo(f"  files: {', '.join(result.files)}")
    typer.echo(f"  output: {result.output_name} [{result.output_width}]  layout_efficiency: {efficiency}")
    same = ("" if check["max_abs_diff"] is None else
            f"max |diff| vs in-process {check['same_precision_reference']} {check['max_abs_diff']:.1e}; ")
    typer.echo(f"  verified on {check['texts']} {check['inputs']}: {same}cos mean vs fp32 {check['cos_mean_fp32']:.5f}, "
               f"NN {check['nn_agreement_fp32']:.3f}")
    if result.padding:
        typer.echo(f"  {result.padding}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if options.platform.value == "python" and not options.threads:
        typer.echo(f"  threads: the thread budget at serve time; now {result.threads.describe()}")
    else:
        typer.echo(f"  threads per instance: {result.threads.threads} ({result.threads.describe()})")

    from icd.stack.triton_service import load_into_running_stacks  # a running `icd stack` serving output_dir

    lines, loaded = load_into_running_stacks(output_dir, options.model_name)
    for line in lines:
        typer.echo(line)
    if not loaded:
        raise SystemExit(1)


def profile(
    run_dir: Path = typer.Argument(..., help="run directory (icd run --out)"),
    runtime: list[str] = typer.Option([], "--runtime", help="only these runtimes (repeatable) [all]"),
    precision: list[str] = typer.Option([], "--precision", help="only these precisions (repeatable) [all]"),
    threads: int = typer.Option(2, "--threads", min=1, help="threads per variant (the thread budget of one model)"),
    runs: int = typer.Option(10, "--runs", min=1, help="timed interleaved rounds"),
    warmup: int = typer.Option(3, "--warmup", min=0),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    seq_len: int = typer.Option(128, "--seq-len", min=1,
                                help="tokens each timed text is padded / truncated to, as clients send it"),
    inputs: str = typer.Option("text", "--inputs",
                               help="text: batches of held-out texts padded to --seq-len, each cut as an export's "
                                    "python backend runs it (trailing padding trimmed to a multiple of 8); random: "
                                    "one full-length batch of random ids [text]"),
    texts: int = typer.Option(None, "--texts", min=2,
                              help="held-out texts for fidelity, and the pool the timed texts come from [all of the "
                                   "run's]"),
    int8_recipe: list[str] = typer.Option([], "--int8-recipe",
                                          help="also profile openvino:int8 with this recipe (repeatable), e.g. "
                                               "icd_outliers_fused [the default recipe only]"),
) -> None:
    """Time every runtime × precision of a run's model in one interleaved run; choose what to serve."""
    from rich.console import Console

    from icd.runtimes.base import Precision
    from icd.runtimes.profile import profile_run, render_table
    from icd.runtimes.registry import get_runtime

    for name in runtime:
        get_runtime(name)  # unknown / not installed: one line, exit 2
    for name in precision:
        if name not in {p.value for p in Precision}:
            raise ConfigError(f"--precision {name!r}: expected one of {[p.value for p in Precision]}")
    doc = profile_run(run_dir, runtimes=runtime, precisions=precision, threads=threads, runs=runs, warmup=warmup, batch_size=batch_size,
                      seq_len=seq_len, texts=texts, int8_recipes=int8_recipe, inputs=inputs, progress=typer.echo)
    Console(width=120).print(render_table(doc))
    choice = doc["choice"]
    typer.echo(f"chosen: {choice['variant']} — {choice['reason']}")
    typer.echo(f"written: {Path(run_dir) / 'runtime_profile.json'} (icd export-triton uses it unless --runtime)")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("export-triton")(export_triton)
    app.command("profile")(profile)
