"""``icd bench`` (one load test) and ``icd simulate`` (traffic patterns) — see docs/load.md.

Every option has a long flag, an ``ICD_LOAD_*`` environment variable and a key in the ``--config`` JSON/YAML
file (the option's name with ``_``); precedence: flag > environment > config file > default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from icd.config.loader import read_config_file
from icd.errors import ConfigError, UserError
from icd.load import settings as S
from icd.load.report import check_writable
from icd.load.timespan import parse_timespan

_SUMMARY_KEYS = ("requests", "duration_s", "throughput_rps", "latency_ms", "errors", "sent", "late_sends",
                 "late_send_fraction", "mode", "interrupted")


def _opt(flag: str, help_: str, default_hint: Any = None) -> Any:
    env = "ICD_LOAD_" + flag.lstrip("-").replace("-", "_").upper()
    hint = f" (default {default_hint})" if default_hint is not None else ""
    return typer.Option(None, flag, envvar=env, help=help_ + hint, show_default=False)


def _load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = read_config_file(path, "--config")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


_KIND_NAMES = {int: "an integer", float: "a number"}


class _Resolver:
    """flag/env value if given, else the config file's key, else the default; converted to ``kind`` with an
    error naming where the value came from."""

    def __init__(self, config: dict[str, Any], known: set[str], path: Path | None = None) -> None:
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"--config {path}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        self.config = config
        self.path = path

    def __call__(self, name: str, value: Any, default: Any, kind: type | None = None) -> Any:
        source = f"--{name.replace('_', '-')}"
        if value is None:
            if name not in self.config:
                return default
            value, source = self.config[name], f"--config {self.path}: key {name!r}"
        if kind is None or value is None:
            return value
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{source}: {value!r} is not {_KIND_NAMES.get(kind, kind.__name__)}") from None


def _duration(name: str, value: Any) -> float:
    try:
        return parse_timespan(value)
    except ValueError as exc:
        raise UserError(f"--{name}: {exc}") from None


def _enum(enum: type, name: str, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise UserError(f"--{name} {value!r}: choose one of {', '.join(e.value for e in enum)}") from None


def _settings(r: _Resolver, **given: Any) -> S.LoadSettings:
    try:
        return S.LoadSettings(
            duration_s=_duration("duration", r("duration", given["duration"], S.DEFAULT_DURATION_S)),
            warmup_s=_duration("warmup", r("warmup", given["warmup"], S.DEFAULT_WARMUP_S)),
            concurrency=r("concurrency", given["concurrency"], S.DEFAULT_CONCURRENCY, int),
            rate=r("rate", given["rate"], None, float),
            arrival=_enum(S.Arrival, "arrival", r("arrival", given["arrival"], given["default_arrival"])),
            batch_size=r("batch_size", given["batch_size"], S.DEFAULT_BATCH_SIZE, int),
            input_shape=r("input_shape", given["input_shape"], S.DEFAULT_INPUT_SHAPE, int),
            inputs=_enum(S.InputSource, "inputs", r("inputs", given["inputs"], S.InputSource.TEXT.value)),
            protocol=_enum(S.Protocol, "protocol", r("protocol", given["protocol"], S.Protocol.HTTP.value)),
            timeout_s=_duration("timeout", r("timeout", given["timeout"], S.DEFAULT_TIMEOUT_S)),
            late_ms=r("late_ms", given["late_ms"], S.DEFAULT_LATE_MS, float),
            max_connections=r("max_connections", given["max_connections"], S.DEFAULT_MAX_CONNECTIONS, int),
            workers=r("workers", given["workers"], min(2, os.cpu_count() or 1), int),
            seed=r("seed", given["seed"], S.DEFAULT_SEED, int),
        )
    except S.SettingError as exc:
        raise UserError(f"{exc.flag}: invalid value {exc.value!r}") from None


def _metrics_port(r: _Resolver, given: int | None) -> int | None:
    """``--metrics-port`` (or the config file's ``metrics_port``), a TCP port or None."""
    port = r("metrics_port", given, None)
    if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
        raise UserError(f"--metrics-port: invalid value {port!r} (expected a TCP port, 1..65535)")
    return port


_COMMON = {"duration", "warmup", "concurrency", "rate", "arrival", "batch_size", "input_shape", "inputs", "protocol",
           "timeout", "late_ms", "max_connections", "workers", "seed", "metrics_port", "report", "progress"}


def _print_summary(data: dict[str, Any]) -> None:
    summary = {k: data[k] for k in _SUMMARY_KEYS if k in data}
    summary["errors"] = {"total": data["errors"]["total"], "by_kind": data["errors"]["by_kind"]}
    typer.echo(json.dumps(summary, indent=2))


def bench(
    endpoint: str = typer.Argument(..., help="Server root, e.g. http://localhost:8000 (gRPC: localhost:8001)"),
    model: str = typer.Argument(..., help="Model name (comma-separated for several)"),
    report: Path = _opt("--report", "Write the JSON report here (atomically)"),
    duration: str = _opt("--duration", "Measured time: 300, 5m, 1h30m", "60"),
    warmup: str = _opt("--warmup", "Leading time excluded from statistics", "0"),
    concurrency: int = _opt("--concurrency", "Closed loop: clients per model", S.DEFAULT_CONCURRENCY),
    rate: float = _opt("--rate", "Open loop: arrivals per second per model (overrides --concurrency)"),
    arrival: str = _opt("--arrival", "Open-loop arrivals: constant | poisson", "constant"),
    batch_size: int = _opt("--batch-size", "Rows per request", S.DEFAULT_BATCH_SIZE),
    input_shape: int = _opt("--input-shape", "Sequence length (tokens)", S.DEFAULT_INPUT_SHAPE),
    inputs: str = _opt("--inputs", "text (tokenized stdlib docstrings) | random (synthetic ids)", "text"),
    protocol: str = _opt("--protocol", "http | grpc", "http"),
    timeout: str = _opt("--timeout", "Per-request timeout", "30"),
    late_ms: float = _opt("--late-ms", "Open loop: a send later than this is counted late", S.DEFAULT_LATE_MS),
    max_connections: int = _opt("--max-connections", "Open loop: most requests in flight per model",
                                S.DEFAULT_MAX_CONNECTIONS),
    workers: int = _opt("--workers", "Generator processes (0 = in this process)", "min(2, cores)"),
    seed: int = _opt("--seed", "Seed of inputs and Poisson gaps", S.DEFAULT_SEED),
    metrics_port: int = _opt("--metrics-port", "Serve the generator's own metrics for Prometheus on this port"),
    progress: bool = typer.Option(True, "--progress/--no-progress", envvar="ICD_LOAD_PROGRESS", help="Live progress"),
    config: Path = typer.Option(None, "--config", envvar="ICD_LOAD_CONFIG", help="JSON/YAML file of option values"),
) -> None:
    """Load-test one or more models: closed loop (--concurrency) or open loop (--rate); prints a JSON summary."""
    from icd.load import Target, run_load

    r = _Resolver(_load_config(config), _COMMON, config)
    settings = _settings(r, duration=duration, warmup=warmup, concurrency=concurrency, rate=rate, arrival=arrival,
                         default_arrival=S.Arrival.CONSTANT.value, batch_size=batch_size, input_shape=input_shape,
                         inputs=inputs, protocol=protocol, timeout=timeout, late_ms=late_ms,
                         max_connections=max_connections, workers=workers, seed=seed)
    report_path = r("report", report, None)
    if report_path is not None:
        check_writable(report_path)
    target = Target(endpoint, tuple(m for m in model.split(",") if m))
    result = run_load(settings, target, progress=bool(r("progress", progress, True)),
                      metrics_port=_metrics_port(r, metrics_port))
    data = result.to_dict()
    if report_path is not None:
        result.write_json(report_path)
    _print_summary(data)
    if result.interrupted:
        typer.echo(f"interrupted: partial report{' written to ' + str(report_path) if report_path else ''}", err=True)
        raise SystemExit(130)  # after the partial report is written (130 = interrupted, as for SIGINT)
    if result.problems:  # the run did not measure what was asked: the report says so, and so does the exit code
        for problem in result.problems:
            typer.echo(f"icd: error: {problem}", err=True)
        raise SystemExit(1)


def simulate(
    endpoint: str = typer.Option(None, "--endpoint", envvar="ICD_LOAD_ENDPOINT", help="e.g. http://localhost:8000"),
    models: str = typer.Option(None, "--models", envvar="ICD_LOAD_MODELS", help="Comma-separated model names"),
    traffic_pattern: str = _opt("--traffic-pattern", "constant | bursty | realistic | stress", "realistic"),
    report: Path = _opt("--report", "JSON report; the HTML report is written next to it"),
    duration: str = _opt("--duration", "wall-clock run time (the pattern's day is compressed into it): 3600, 1h, 90s", "60"),
    rate: float = _opt("--rate", "Per model: constant/bursty base, realistic peak, stress start rate (req/s)", 10),
    slo_p95_ms: float = _opt("--slo-p95-ms", "Stress: p95 SLO in ms", 250),
    step: str = _opt("--step", "Stress: seconds per ramp step", "min(10, duration/6)"),
    arrival: str = _opt("--arrival", "constant | poisson (realistic is always poisson)", "poisson"),
    batch_size: int = _opt("--batch-size", "Rows per request", S.DEFAULT_BATCH_SIZE),
    input_shape: int = _opt("--input-shape", "Sequence length (tokens)", S.DEFAULT_INPUT_SHAPE),
    inputs: str = _opt("--inputs", "text | random", "text"),
    protocol: str = _opt("--protocol", "http | grpc", "http"),
    timeout: str = _opt("--timeout", "Per-request timeout", "30"),
    late_ms: float = _opt("--late-ms", "A send later than this is counted late", S.DEFAULT_LATE_MS),
    max_connections: int = _opt("--max-connections", "Most requests in flight per model", S.DEFAULT_MAX_CONNECTIONS),
    workers: int = _opt("--workers", "Generator processes (0 = in this process)", "min(2, cores)"),
    seed: int = _opt("--seed", "Seed of inputs and Poisson gaps", S.DEFAULT_SEED),
    metrics_port: int = _opt("--metrics-port", "Serve the generator's own metrics for Prometheus on this port"),
    progress: bool = typer.Option(True, "--progress/--no-progress", envvar="ICD_LOAD_PROGRESS", help="Live progress"),
    config: Path = typer.Option(None, "--config", envvar="ICD_LOAD_CONFIG", help="JSON/YAML file of option values"),
) -> None:
    """Simulate production traffic on several models; writes JSON + HTML reports and prints a summary."""
    from icd.load import Target
    from icd.load.shapes import STRESS_SLO_P95_MS, TrafficPattern
    from icd.load.simulation import DEFAULT_SIM_RATE, SimulationSettings, run_simulation, write_simulation

    known = _COMMON | {"endpoint", "models", "traffic_pattern", "slo_p95_ms", "step"}
    r = _Resolver(_load_config(config), known, config)
    endpoint_v, models_v = r("endpoint", endpoint, None), r("models", models, None)
    if not endpoint_v or not models_v:
        raise UserError("--endpoint and --models are required (flag, ICD_LOAD_* variable or config key)")
    pattern = _enum(TrafficPattern, "traffic-pattern", r("traffic_pattern", traffic_pattern, "realistic"))
    settings = _settings(r, duration=duration, warmup=None, concurrency=None, rate=None, arrival=arrival,
                         default_arrival=S.Arrival.POISSON.value, batch_size=batch_size, input_shape=input_shape,
                         inputs=inputs, protocol=protocol, timeout=timeout, late_ms=late_ms,
                         max_connections=max_connections, workers=workers, seed=seed)
    step_v = r("step", step, None)
    sim = SimulationSettings(pattern, r("rate", rate, DEFAULT_SIM_RATE, float),
                             r("slo_p95_ms", slo_p95_ms, STRESS_SLO_P95_MS, float),
                             None if step_v is None else _duration("step", step_v))
    report_path = r("report", report, None)
    if report_path is not None:
        check_writable(report_path)
        check_writable(Path(report_path).with_suffix(".html"))
    target = Target(endpoint_v, tuple(m for m in str(models_v).split(",") if m))
    result = run_simulation(sim, settings, target, progress=bool(r("progress", progress, True)),
                            metrics_port=_metrics_port(r, metrics_port))
    data = result.to_dict()
    if report_path is not None:
        html = write_simulation(result, report_path)
        typer.echo(f"reports: {report_path} {html}", err=True)
    summary = {"traffic_pattern": pattern.value, **{k: data[k] for k in _SUMMARY_KEYS if k in data}}
    summary["errors"] = {"total": data["errors"]["total"], "by_kind": data["errors"]["by_kind"]}
    summary["per_model"] = {m: {"throughput_rps": v["throughput_rps"], "p95_ms": v["latency_ms"]["p95"],
                                "errors": v["errors"]["total"]} for m, v in data["models"].items()}
    if "stress" in data:
        summary["max_rate_within_slo_rps"] = {m: v["max_rate_within_slo_rps"] for m, v in data["stress"].items()}
    typer.echo(json.dumps(summary, indent=2))
    if result.report.interrupted:
        raise SystemExit(130)  # after the partial report is written (130 = interrupted, as for SIGINT)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.command("bench")(bench)
    app.command("simulate")(simulate)
