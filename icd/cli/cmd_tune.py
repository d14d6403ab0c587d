"""`icd tune` (alias `optimize-instances`, the guide's name) and `icd tune-report` — Triton configuration search.

See docs/scaling.md. Exit codes: 0 a configuration meets the SLO (its config.pbtxt is written); 1 none does, or
the remote server died (the checkpoint keeps what was measured; the same command resumes); 2 a user error
before any load; 130 Ctrl-C (resumable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icd.io.urls import url_option
from icd.tune.measure import DEFAULT_DURATION_S, DEFAULT_INPUT_SHAPE, DEFAULT_WARMUP_S, LoadSpec
from icd.tune.settings import DEFAULT_ENDPOINT, DEFAULT_MODEL_REPOSITORY

EXIT_NO_CONFIG = 1
"""No configuration meets the SLO, or the search stopped early."""
_CSV = "Comma-separated; overrides --space."


def _ints(text: str | None, flag: str) -> list[int] | None:
    from icd.errors import UserError

    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise UserError(f"{flag}: empty list")
    return values


def tune(  # noqa: PLR0913 - one flag per setting, declared once
    model: Annotated[str, typer.Option(help="Model to tune.")] = "bert_icd",
    target_latency: Annotated[float, typer.Option("--target-latency", help="Latency SLO, ms (at --slo-percentile).")] = 100.0,
    slo_percentile: Annotated[int, typer.Option(help="Latency percentile the SLO bounds: 50, 95 or 99.")] = 99,
    objective: Annotated[str, typer.Option(help="throughput | cost | auto (cost when --cost-model is given).")] = "auto",
    mode: Annotated[str, typer.Option(help="quick (hill climbing) | brute (every configuration).")] = "quick",
    cost_model: Annotated[Optional[str], typer.Option(help="Name in deploy/cost_models/ or a YAML path.")] = None,  # noqa: UP007
    instance_type: Annotated[Optional[str], typer.Option(help="Instance of the cost model (default: its first).")] = None,  # noqa: UP007
    target_utilization: Annotated[float, typer.Option(help="Plan to run at this % of measured capacity (cost).")] = 80.0,
    demand_rps: Annotated[Optional[float], typer.Option(help="Expected requests/s: sizes the fleet in the report.")] = None,  # noqa: UP007
    endpoint: Annotated[str, typer.Option(callback=lambda value: url_option(value, "--endpoint"),
                                          help="Triton HTTP endpoint (remote launch mode).")] = DEFAULT_ENDPOINT,
    model_repository: Annotated[Path, typer.Option(help="Model repository (local launch mode).")] = DEFAULT_MODEL_REPOSITORY,
    launch_mode: Annotated[str, typer.Option(help="auto | remote (--endpoint, explicit model control) | local (private server).")] = "auto",
    space: Annotated[Optional[Path], typer.Option(help="YAML file of search-space fields (docs/scaling.md).")] = None,  # noqa: UP007
    instance_counts: Annotated[Optional[str], typer.Option(help=f"Instance counts. {_CSV}")] = None,  # noqa: UP007
    threads: Annotated[Optional[str], typer.Option(help=f"Threads per instance (0 = runtime default). {_CSV}")] = None,  # noqa: UP007
    max_batch_sizes: Annotated[Optional[str], typer.Option(help=f"max_batch_size values. {_CSV}")] = None,  # noqa: UP007
    preferred_batch_sizes: Annotated[Optional[str], typer.Option(help=f"Options: none, max, or sizes like 4:8. {_CSV}")] = None,  # noqa: UP007
    queue_delays_us: Annotated[Optional[str], typer.Option(help=f"max_queue_delay_microseconds values. {_CSV}")] = None,  # noqa: UP007
    versions: Annotated[Optional[str], typer.Option(help=f"Model versions to try, each a runtime / precision export (icd export-triton --version N --runtime R --precision P). {_CSV}")] = None,  # noqa: UP007
    concurrency: Annotated[Optional[str], typer.Option(help=f"Closed-loop client counts swept per configuration. {_CSV}")] = None,  # noqa: UP007
    duration: Annotated[float, typer.Option(help="Measured seconds per measurement.")] = DEFAULT_DURATION_S,
    warmup: Annotated[float, typer.Option(help="Warm-up seconds per measurement (not counted).")] = DEFAULT_WARMUP_S,
    input_shape: Annotated[int, typer.Option(help="Tokens per request row.")] = DEFAULT_INPUT_SHAPE,
    batch_size: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    inputs: Annotated[str, typer.Option(help="random token ids (every token attended: the full-length worst case) | "
                                             "text (real docstrings padded to --input-shape).")] = "random",
    report: Annotated[Path, typer.Option(help="JSON report; .html, .png, .checkpoint.json, .config.pbtxt beside it.")] = Path(
        "tune_report.json"),
    fresh: Annotated[bool, typer.Option(help="Ignore an existing checkpoint and start over.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Search Triton configurations on the live server; write the winner's config.pbtxt and an HTML report."""
    from icd.errors import UserError
    from icd.tune.measurement import Slo
    from icd.tune.objective import ObjectiveKind
    from icd.tune.run import run_tune
    from icd.tune.server import LaunchMode
    from icd.tune.settings import TuneSettings
    from icd.tune.space import build_space, parse_preferred_option
    from icd.tune.strategy import SearchMode

    def choice(enum, value: str, flag: str):
        try:
            return enum(value)
        except ValueError:
            raise UserError(f"{flag}: {value!r} is not one of {[e.value for e in enum]}") from None

    kind = ("cost" if cost_model else "throughput") if objective == "auto" else objective
    preferred = None if preferred_batch_sizes is None else [
        parse_preferred_option(t) for t in preferred_batch_sizes.split(",") if t.strip()]
    search_space = build_space(space, {
        "instance_counts": _ints(instance_counts, "--instance-counts"), "threads": _ints(threads, "--threads"),
        "max_batch_sizes": _ints(max_batch_sizes, "--max-batch-sizes"), "preferred_batch_sizes": preferred,
        "queue_delays_us": _ints(queue_delays_us, "--queue-delays-us"), "versions": _ints(versions, "--versions"),
        "concurrency": _ints(concurrency, "--concurrency")})
    try:
        slo = Slo(target_latency, slo_percentile)
    except ValueError as exc:
        raise UserError(f"--target-latency / --slo-percentile: {exc}") from None
    settings = TuneSettings(
        model=model, slo=slo, objective=choice(ObjectiveKind, kind, "--objective"),
        mode=choice(SearchMode, mode, "--mode"), space=search_space,
        load=_checked_load(LoadSpec(duration, warmup, input_shape, batch_size, inputs)),
        endpoint=endpoint.rstrip("/"),
        model_repository=model_repository, launch_mode=choice(LaunchMode, launch_mode, "--launch-mode"),
        cost_model=cost_model, instance_type=instance_type, utilization=target_utilization / 100.0,
        demand_rps=demand_rps, report=report, fresh=fresh, progress=not quiet)
    doc = run_tune(settings)
    _print_outcome(doc)
    if doc["recommendation"] is None or doc["status"] != "complete":
        raise typer.Exit(EXIT_NO_CONFIG)


def _checked_load(load: LoadSpec) -> LoadSpec:
    """``load`` if every point can run it; else the flag and value at fault, before any server is touched."""
    from icd.errors import UserError
    from icd.load.settings import InputSource, SettingError

    if load.inputs not in {source.value for source in InputSource}:
        raise UserError(f"--inputs {load.inputs!r}: expected one of {[source.value for source in InputSource]}")
    try:
        load.settings(1)
    except SettingError as exc:
        raise UserError(f"{exc.flag}: invalid value {exc.value!r}") from None
    return load


def _print_outcome(doc: dict) -> None:
    typer.echo(doc["verdict"])
    if doc["stop_reason"]:
        typer.echo(f"search {doc['status']}: {doc['stop_reason']}")
    typer.echo(f"{doc['measurements']} measurement(s) of {doc['configurations_measured']} configuration(s); "
               f"report: {doc['files']['html']}")
    if doc["files"]["config"]:
        typer.echo(f"winning config.pbtxt: {doc['files']['config']}")


def tune_report(
    checkpoint: Annotated[Path, typer.Argument(help="A <report>.checkpoint.json written by icd tune.")],
    report: Annotated[Optional[Path], typer.Option(help="Report path (default: beside the checkpoint).")] = None,  # noqa: UP007
) -> None:
    """Render the reports (JSON, HTML with Pareto plot, winner's config.pbtxt) of a tune checkpoint, offline."""
    from icd.tune.run import render_checkpoint

    _print_outcome(render_checkpoint(checkpoint, report))


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("tune")(tune)
    app.command("optimize-instances", help="The guide's name for `icd tune` (same flags).")(tune)
    app.command("tune-report")(tune_report)
