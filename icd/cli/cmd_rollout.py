"""`icd router up|set|switch|status|down`, `icd ab`, `icd canary deploy|monitor|status`, `icd validate`,
`icd switch` — the guide's A/B, canary and blue-green scripts call these (see docs/rollout.md)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from icd.defaults import LOOPBACK, ROUTER_PORT, TRITON_HTTP_PORT

EXIT_FAILED = 1
"""Exit code of a validation that failed, a refused / rolled-back switch, a canary that failed or alerted."""
DEFAULT_ENDPOINT = f"http://{LOOPBACK}:{TRITON_HTTP_PORT}"
DEFAULT_PUBLIC_MODEL = "bert"
DEFAULT_REPOSITORY = Path("deploy/triton/models")
ROUTER_EXPORTER_PORT = 9180

router_app = typer.Typer(help="The nginx traffic router (one public model name -> weighted variants, blue/green).",
                         no_args_is_help=True)
canary_app = typer.Typer(help="Flagger-style progressive canary with automatic rollback.", no_args_is_help=True)

StateDir = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    help="State folder (router, canary state); default $ICD_STATE_DIR or .icd.")]


def _state(explicit: Path | None) -> Path:
    from icd.monitor.paths import state_dir

    return state_dir(explicit)


def _seconds(text: str, flag: str) -> float:
    from icd.errors import UserError
    from icd.load.timespan import parse_timespan

    try:
        return parse_timespan(text)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None


def _router(state: Path):
    from icd.rollout.router_nginx import NginxRouter
    from icd.rollout.router_ops import ROUTER_SUBDIR

    return NginxRouter(state / ROUTER_SUBDIR)


def _running_router(state: Path):
    from icd.errors import UserError

    router = _router(state)
    if router.master_pid() is None:
        raise UserError(f"no router running in {router.workdir} (start one with `icd router up`)")
    return router


# --- router -----------------------------------------------------------------------------------------------------
@router_app.command("up")
def router_up(
    port: Annotated[int, typer.Option(help="Router port on 127.0.0.1.")] = ROUTER_PORT,
    public_model: Annotated[str, typer.Option(help="Model name clients call.")] = DEFAULT_PUBLIC_MODEL,
    variant: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="NAME=WEIGHT (repeatable): a Triton model and its traffic %.")] = None,
    upstream: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="COLOUR=HOST:PORT[+HOST:PORT] (repeatable): Triton HTTP servers of a colour.")] = None,
    active: Annotated[str, typer.Option(help="Colour that takes traffic.")] = "blue",
    exporter_port: Annotated[int, typer.Option(help="Router metrics exporter port (0 = none).")] = ROUTER_EXPORTER_PORT,
    state_dir: StateDir = None,
) -> None:
    """Start nginx (detached) routing the public model name to weighted variants."""
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import check_spec, parse_upstreams, parse_weights, start_exporter

    spec = check_spec(RouterSpec(port, public_model, parse_weights(variant or ["bert_baseline=100"]),
                                 parse_upstreams(upstream or [f"blue={LOOPBACK}:{TRITON_HTTP_PORT}"]), active))
    router = _router(_state(state_dir))
    router.start(spec, detach=True)
    typer.echo(f"router   {router.url}/v2/models/{public_model}/infer (nginx pid {router.master_pid()}, "
               f"config {router.conf_path})")
    if exporter_port:
        pid = start_exporter(router, exporter_port)
        typer.echo(f"metrics  http://{LOOPBACK}:{exporter_port}/metrics (exporter pid {pid})")


@router_app.command("set")
def router_set(
    variant: Annotated[list[str], typer.Option(help="NAME=WEIGHT (repeatable or comma-separated).")],
    state_dir: StateDir = None,
) -> None:
    """Change variant weights with a graceful reload (no request dropped)."""
    from icd.rollout.router_ops import parse_weights

    spec = _running_router(_state(state_dir)).set_weights(parse_weights(variant))
    typer.echo(f"generation {spec.generation}: {json.dumps(spec.weights)}")


@router_app.command("switch")
def router_switch(
    to: Annotated[str, typer.Option("--to", help="Colour to send all traffic to.")],
    state_dir: StateDir = None,
) -> None:
    """Send all traffic to another upstream colour immediately (no validation: see `icd switch`)."""
    spec = _running_router(_state(state_dir)).switch(to)
    typer.echo(f"generation {spec.generation}: active {spec.active}")


@router_app.command("status")
def router_status(state_dir: StateDir = None) -> None:
    """Print the live routing (router.json) and whether nginx runs."""
    router = _router(_state(state_dir))
    pid = router.master_pid()
    typer.echo(json.dumps({"running": pid is not None, "pid": pid, **router.spec.to_dict()}, indent=2))


@router_app.command("down")
def router_down(state_dir: StateDir = None) -> None:
    """Stop the router (graceful) and its exporter, and wait for them."""
    from icd.rollout.router_ops import stop_exporter

    router = _router(_state(state_dir))
    was = router.master_pid()
    router.stop()
    exporter = stop_exporter(router)
    typer.echo(f"stopped: {'nginx ' if was else ''}{'exporter' if exporter else ''}".strip() if was or exporter
               else "nothing running")


# --- A/B ----------------------------------------------------------------------------------------------------------
def _payloads(inputs: str, n: int, seq_len: int) -> list[dict]:
    from icd.errors import UserError
    from icd.rollout.payloads import synthetic_payloads, text_payloads

    if inputs == "text":
        return text_payloads(n, seq_len)
    if inputs == "synthetic":
        return synthetic_payloads(n, seq_len)
    raise UserError(f"--inputs {inputs!r}: expected 'text' or 'synthetic'")


def ab(
    model_a: Annotated[str, typer.Option(help="Variant A (the reference).")] = "bert_baseline",
    model_b: Annotated[str, typer.Option(help="Variant B (the challenger).")] = "bert_icd",
    duration: Annotated[str, typer.Option(help="Load duration: 1800, 30s, 5m, 1h30m.")] = "60s",
    traffic_split: Annotated[str, typer.Option(help="A:B traffic percentages.")] = "50:50",
    report: Annotated[Path, typer.Option(help="JSON report (the HTML goes next to it).")]
    = Path("results/ab_test_results.json"),
    concurrency: Annotated[int, typer.Option(help="Closed-loop client workers.")] = 4,
    endpoint: Annotated[str, typer.Option(help="Triton HTTP endpoint (used when no router runs).")] = DEFAULT_ENDPOINT,
    inputs: Annotated[str, typer.Option(help="'text' (held-out docstrings) or 'synthetic' (random ids).")] = "text",
    seq_len: Annotated[int, typer.Option(help="Tokens per request.")] = 64,
    agreement_n: Annotated[int, typer.Option(help="Inputs sent to both variants for output agreement.")] = 32,
    state_dir: StateDir = None,
) -> None:
    """A/B test through the router: latency, p95, errors, throughput, output agreement; JSON + HTML report.

    Uses the router of `icd router up` when one runs, else a temporary router in front of --endpoint.
    """
    from icd.rollout.ab import ABSpec, run_ab, run_ab_at_endpoint, verdict_table_text, write_ab_report
    from icd.rollout.weights import parse_split

    spec = ABSpec(model_a, model_b, _seconds(duration, "--duration"), parse_split(traffic_split), concurrency,
                  agreement_n, inputs=inputs)
    payloads = _payloads(inputs, max(agreement_n, 32), seq_len)
    running = _router(_state(state_dir))
    typer.echo(f"A/B {model_b} vs {model_a}: {spec.duration_s:g}s, split {traffic_split}")
    if running.master_pid() is not None:
        typer.echo(f"through the running router {running.url}")
        result = run_ab(running, spec, payloads)
        json_path, html_path = write_ab_report(result, report)
    else:
        typer.echo(f"through a temporary router in front of {endpoint}")
        result, json_path, html_path = run_ab_at_endpoint(endpoint, spec, payloads, report, DEFAULT_PUBLIC_MODEL)
    typer.echo(verdict_table_text(result.verdicts))
    typer.echo(f"report   {json_path}\nhtml     {html_path}")


# --- canary -------------------------------------------------------------------------------------------------------
def _provider(prometheus_url: str | None, router):
    from icd.rollout.providers import AccessLogProvider, PrometheusProvider

    return PrometheusProvider(prometheus_url) if prometheus_url else AccessLogProvider(router.access_log)


@canary_app.command("deploy")
def canary_deploy(
    model: Annotated[str, typer.Option(help="The canary model.")] = "bert_icd",
    baseline: Annotated[str, typer.Option(help="The primary model serving today.")] = "bert_baseline",
    traffic_percentage: Annotated[float, typer.Option(help="Canary weight step (%).")] = 10.0,
    max_weight: Annotated[Optional[float], typer.Option(  # noqa: UP007
        help="Highest canary weight before promotion (%); default = --traffic-percentage.")] = None,
    monitor_duration: Annotated[str, typer.Option(help="Analysis time before promotion (e.g. 3600, 1h).")] = "1h",
    interval: Annotated[str, typer.Option(help="Time between analyses.")] = "60s",
    threshold: Annotated[int, typer.Option(help="Failed checks before rollback.")] = 2,
    alert_threshold: Annotated[float, typer.Option(help="Max canary p95 latency increase vs baseline (%).")] = 5.0,
    error_rate_diff: Annotated[float, typer.Option(help="Max error-rate difference (percentage points).")] = 1.0,
    min_samples: Annotated[int, typer.Option(help="Requests per variant per interval needed to judge.")] = 20,
    prometheus_url: Annotated[Optional[str], typer.Option(  # noqa: UP007
        envvar="ICD_PROMETHEUS_URL", help="Judge with PromQL on this Prometheus (else the router's log).")] = None,
    endpoint: Annotated[str, typer.Option(help="Triton HTTP endpoint (when a router must be started).")]
    = DEFAULT_ENDPOINT,
    router_port: Annotated[int, typer.Option(help="Port of a router started here.")] = ROUTER_PORT,
    resume: Annotated[bool, typer.Option(help="Resume the rollout in the state folder.")] = False,
    metrics_port: Annotated[int, typer.Option(help="Serve the controller's own metrics here (0 = off).")] = 0,
    state_dir: StateDir = None,
) -> None:
    """Progressive canary: step the weight up while the analysis passes; roll back after --threshold failures."""
    from icd.rollout.canary_spec import CanarySpec
    from icd.rollout.controller import run_controller
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import endpoint_addr, ensure_router
    from icd.rollout.scheduler import CanaryScheduler

    from icd.errors import UserError

    state = _state(state_dir)
    spec = None
    if not resume:
        if traffic_percentage <= 0:
            raise UserError(f"--traffic-percentage must be > 0, got {traffic_percentage:g}")
        step_s = _seconds(interval, "--interval")
        top = max_weight if max_weight is not None else traffic_percentage
        steps = math.ceil(top / traffic_percentage)
        iterations = max(1, round(_seconds(monitor_duration, "--monitor-duration") / step_s) - steps + 1)
        try:
            spec = CanarySpec.progressive(baseline, model, alert_threshold=alert_threshold,
                                          error_rate_diff_pp=error_rate_diff, interval_s=step_s, threshold=threshold,
                                          step_weight=traffic_percentage, max_weight=top, iterations=iterations,
                                          min_samples=min_samples)
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in errors()) if errors else exc
            raise UserError(f"canary spec: {text}") from None
    router, started = ensure_router(state / "router", RouterSpec(
        router_port, DEFAULT_PUBLIC_MODEL, {baseline: 100.0, model: 0.0}, {"blue": [endpoint_addr(endpoint)]}, "blue"))
    if started:
        typer.echo(f"router   started at {router.url} (stop with `icd router down`)")
    scheduler = CanaryScheduler(router, _provider(prometheus_url, router), state / "canary")
    if spec is not None:
        scheduler.begin(spec)
    spec, _ = scheduler.status()
    typer.echo(f"canary   {spec.canary} vs {spec.primary}: step {spec.step_weight:g}%, max {spec.max_weight:g}%, "
               f"interval {spec.interval_s:g}s, threshold {spec.threshold}, iterations {spec.iterations}; "
               f"state {scheduler.store.path}")

    from icd.rollout.controller_metrics import CanaryRecorder

    recorder = CanaryRecorder(metrics_port).start()

    def show(status) -> None:
        last = scheduler.log.last()
        recorder.record(spec, status, last)
        typer.echo(f"{time.strftime('%H:%M:%S')} tick {status.tick}: {status.phase.value} weight "
                   f"{status.canary_weight:g}% failed {status.failed_checks} — {last.action.value}: {last.reason}")

    try:
        final = run_controller(scheduler, on_tick=show)
    finally:
        recorder.stop()
    typer.echo(f"canary   {final.phase.value} (decisions: {scheduler.log.path})")
    if final.phase.value == "Failed":
        raise SystemExit(EXIT_FAILED)


@canary_app.command("monitor")
def canary_monitor(
    baseline: Annotated[str, typer.Option(help="The primary model.")] = "bert_baseline",
    canary: Annotated[str, typer.Option(help="The canary model.")] = "bert_icd",
    alert_threshold: Annotated[float, typer.Option(help="Alert when canary p95 exceeds baseline by this %.")] = 5.0,
    error_rate_diff: Annotated[float, typer.Option(help="Alert above this error-rate difference (pp).")] = 1.0,
    interval: Annotated[str, typer.Option(help="Analysis window and period.")] = "60s",
    duration: Annotated[str, typer.Option(help="Keep watching this long (0 = one analysis).")] = "0",
    min_samples: Annotated[int, typer.Option(help="Requests per variant per window needed to judge.")] = 20,
    prometheus_url: Annotated[Optional[str], typer.Option(  # noqa: UP007
        envvar="ICD_PROMETHEUS_URL", help="Judge with PromQL on this Prometheus (else the router's log).")] = None,
    state_dir: StateDir = None,
) -> None:
    """Compare canary to baseline (p95 increase %, error-rate difference); exit 1 if an alert fired."""
    from icd.io.atomic import write_json_atomic
    from icd.rollout.analysis import analyse
    from icd.rollout.canary_spec import CanarySpec
    from icd.rollout.phase import CheckVerdict

    state = _state(state_dir)
    router = _router(state)
    window = _seconds(interval, "--interval")
    spec = CanarySpec.progressive(baseline, canary, alert_threshold=alert_threshold, error_rate_diff_pp=error_rate_diff,
                                  interval_s=window, min_samples=min_samples)
    provider = _provider(prometheus_url, router)
    deadline = time.monotonic() + _seconds(duration, "--duration")
    alerts, results = 0, []
    while True:
        result = analyse(spec, provider)
        results.append({"t": time.time(), **result.to_dict()})
        parts = [f"{c.name} {'n/a' if c.value is None else f'{c.value:+.2f}'} ({c.verdict.value})" for c in result.checks]
        alert = result.verdict is CheckVerdict.FAIL
        alerts += alert
        typer.echo(f"{time.strftime('%H:%M:%S')} {'ALERT' if alert else 'ok   ' if result.verdict is CheckVerdict.PASS else 'nodata'} "
                   + "; ".join(parts))
        if time.monotonic() + window > deadline:
            break
        time.sleep(window)
    write_json_atomic(state / "canary" / "monitor.json", {"baseline": baseline, "canary": canary, "results": results})
    if (state / "canary" / "canary_state.json").exists():
        from icd.rollout.status_store import StatusStore

        _, status = StatusStore(state / "canary").load()
        typer.echo(f"controller: {status.phase.value}, canary weight {status.canary_weight:g}%, "
                   f"failed checks {status.failed_checks}")
    if alerts:
        raise SystemExit(EXIT_FAILED)


@canary_app.command("status")
def canary_status(state_dir: StateDir = None) -> None:
    """Print the canary's persisted status and its last decisions."""
    from icd.rollout.decision_log import DecisionLog
    from icd.rollout.status_store import DECISIONS_FILE, StatusStore

    folder = _state(state_dir) / "canary"
    spec, status = StatusStore(folder).load()
    typer.echo(json.dumps({"spec": spec.model_dump(mode="json"), "status": status.to_dict()}, indent=2))
    for d in DecisionLog(folder / DECISIONS_FILE).read()[-5:]:
        typer.echo(f"tick {d.tick}: {d.action.value} — {d.reason}")


# --- blue-green ---------------------------------------------------------------------------------------------------
def validate(
    endpoint: Annotated[str, typer.Option(help="Triton HTTP endpoint to validate.")] = DEFAULT_ENDPOINT,
    model: Annotated[str, typer.Option(help="Model to validate.")] = "bert_icd",
    test_duration: Annotated[str, typer.Option(help="Latency-SLO load duration (300, 30s, 5m).")] = "30s",
    slo_p95_ms: Annotated[float, typer.Option(help="Latency SLO: p95 under load (ms).")] = 250.0,
    concurrency: Annotated[int, typer.Option(help="Load workers.")] = 4,
    golden: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Golden file {inputs, outputs} (e.g. from `--record-golden` on blue).")] = None,
    model_repository: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Exported model repository: its TorchScript gives the reference outputs.")] = None,
    record_golden: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Record this endpoint's outputs as a golden file and exit.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the validation report (JSON).")] = None,  # noqa: UP007
) -> None:
    """Validate a deployment: health, readiness, metadata, golden outputs, latency SLO. Exit 0 pass, 1 fail."""
    from icd.io.atomic import write_json_atomic
    from icd.rollout import validation

    if record_golden is not None:
        validation.record_golden(endpoint, model, _payloads("text", validation.DEFAULT_GOLDEN_N, 64), record_golden)
        typer.echo(f"golden   {record_golden}")
        return
    repo = model_repository if model_repository is not None else (
        DEFAULT_REPOSITORY if golden is None and DEFAULT_REPOSITORY.is_dir() else None)
    result = validation.validate_deployment(validation.ValidationSpec(
        endpoint.rstrip("/"), model, _seconds(test_duration, "--test-duration"), concurrency, slo_p95_ms,
        golden_file=golden, model_repository=repo))
    for c in result.checks:
        typer.echo(f"{'PASS' if c.passed else 'FAIL'}  {c.name:15s} {c.detail}")
    typer.echo(f"{'PASSED' if result.passed else 'FAILED'}: {model} at {endpoint}")
    if report is not None:
        write_json_atomic(report, result.to_dict())
    if not result.passed:
        raise SystemExit(EXIT_FAILED)


def switch(
    from_: Annotated[str, typer.Option("--from", help="Colour serving now.")] = "blue",
    to: Annotated[str, typer.Option("--to", help="Colour to switch to.")] = "green",
    validation_time: Annotated[str, typer.Option(help="Watch window after the switch (600, 10m).")] = "600",
    model: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Model validated on the target; default: the router's heaviest variant.")] = None,
    precheck_duration: Annotated[str, typer.Option(help="Latency-SLO load on the target before the switch.")]
    = "10s",
    watch_interval: Annotated[str, typer.Option(help="Time between watch checks.")] = "5s",
    slo_p95_ms: Annotated[float, typer.Option(help="Latency SLO p95 (ms).")] = 250.0,
    max_error_rate: Annotated[float, typer.Option(help="Highest accepted error rate (fraction).")] = 0.01,
    golden: Annotated[Optional[Path], typer.Option(help="Golden file for the target.")] = None,  # noqa: UP007
    model_repository: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Exported repository for reference outputs.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Blue-green switch: validate the target, switch, watch, switch back on failure. Exit 0 switched, 1 not."""
    from icd.rollout.bluegreen import SwitchOutcome, SwitchSpec, switch_traffic

    state = _state(state_dir)
    router = _running_router(state)
    weights = router.spec.weights
    repo = model_repository if model_repository is not None else (
        DEFAULT_REPOSITORY if golden is None and DEFAULT_REPOSITORY.is_dir() else None)
    spec = SwitchSpec(from_, to, model or max(weights, key=lambda k: weights[k]),
                      _seconds(validation_time, "--validation-time"), _seconds(precheck_duration, "--precheck-duration"),
                      _seconds(watch_interval, "--watch-interval"), slo_p95_ms, max_error_rate, golden, repo)
    typer.echo(f"switch   {from_} -> {to} ({spec.model}), watch {spec.validation_time_s:g}s")
    result = switch_traffic(router, spec, log_path=state / "bluegreen" / "switch_log.jsonl")
    for event in result.events:
        detail = event.get("detail") or event.get("to") or ("passed" if event.get("passed") else "failed")
        typer.echo(f"  {event['event']}: {detail}")
    typer.echo(f"{result.outcome.value}: {result.reason}")
    if result.outcome is not SwitchOutcome.SWITCHED:
        raise SystemExit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.add_typer(router_app, name="router")
    app.add_typer(canary_app, name="canary")
    app.command("ab")(ab)
    app.command("validate")(validate)
    app.command("switch")(switch)
