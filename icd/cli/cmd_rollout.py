"""`icd router up|set|switch|mirror|status|down`, `icd ab`, `icd canary deploy|monitor|status`, `icd validate`,
`icd switch` — the guide's A/B, canary and blue-green scripts call these (see docs/rollout.md).

Exit codes: 0 done / passed / promoted; 1 failed (validation failed, switch refused or rolled back, canary rolled
back, an alert fired); 2 a user error (bad flag, unknown model, port in use — nothing started); 3 inconclusive
(no or too little traffic to judge, or time blocks that disagree): never a verdict from no evidence.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from icd.defaults import DEFAULT_PUBLIC_MODEL, LOOPBACK, ROUTER_PORT, TRITON_HTTP_PORT
from icd.io.urls import url_option

EXIT_FAILED = 1
"""Exit code of a validation that failed, a refused / rolled-back switch, a canary that failed or alerted."""
EXIT_INCONCLUSIVE = 3
"""Exit code of an analysis that had no (or too little) traffic to judge, or whose time blocks disagree."""
DEFAULT_ENDPOINT = f"http://{LOOPBACK}:{TRITON_HTTP_PORT}"
DEFAULT_REPOSITORY = Path("deploy/triton/models")
ROUTER_EXPORTER_PORT = 9180
SHADOW_COMPARATOR_PORT = 9181

router_app = typer.Typer(help="The nginx traffic router (one public model name -> weighted variants, blue/green).",
                         no_args_is_help=True)
canary_app = typer.Typer(help="Flagger-style progressive delivery (canary, A/B match, mirror) with automatic "
                         "rollback.", no_args_is_help=True)

StateDir = Annotated[Optional[Path], typer.Option(  # noqa: UP007 - typer needs Optional
    help="State folder (router, canary state); default $ICD_STATE_DIR or .icd.")]
PrometheusUrl = Annotated[Optional[str], typer.Option(  # noqa: UP007
    envvar="ICD_PROMETHEUS_URL", callback=lambda value: url_option(value, "--prometheus-url"),
    help="Judge with PromQL on this Prometheus (else the router's / comparator's logs).")]
LoadRate = Annotated[Optional[float], typer.Option(  # noqa: UP007
    help="Generate this many req/s through the router while judging (load-test webhook); default: live traffic "
         "only.")]


def _state(explicit: Path | None) -> Path:
    from icd.monitor.paths import state_dir

    return state_dir(explicit)


def _seconds(text: str, flag: str, zero_allowed: bool = False) -> float:
    """``text`` as seconds, > 0 (or 0 where ``zero_allowed``: an option whose 0 has a meaning of its own)."""
    from icd.errors import UserError
    from icd.load.timespan import parse_timespan

    try:
        seconds = parse_timespan(text)
    except ValueError as exc:
        raise UserError(f"{flag}: {exc}") from None
    if seconds == 0 and zero_allowed:
        return seconds
    if not seconds > 0:  # a duration or an interval: 0 would divide by it or never end
        raise UserError(f"{flag} {text!r}: expected a time longer than 0 (e.g. 30s, 5m)")
    return seconds


def _check_golden(path: Path | None) -> None:
    """A --golden file given must be there (before any check or traffic)."""
    from icd.errors import UserError

    if path is not None and not path.is_file():
        raise UserError(f"--golden {path}: no such file (record one with `icd validate --record-golden`)")


def _check_repository(path: Path | None) -> None:
    """A --model-repository given must be a folder of model folders (before any check or traffic)."""
    from icd.errors import UserError

    if path is not None and not path.is_dir():
        raise UserError(f"--model-repository {path}: no such directory (a Triton model repository)")


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
    port: Annotated[int, typer.Option(min=1, max=65535, help="Router port on 127.0.0.1.")] = ROUTER_PORT,
    public_model: Annotated[str, typer.Option(help="Model name clients call.")] = DEFAULT_PUBLIC_MODEL,
    variant: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="NAME=WEIGHT (repeatable): a Triton model and its traffic %.")] = None,
    upstream: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="COLOUR=HOST:PORT[+HOST:PORT] (repeatable): Triton HTTP servers of a colour.")] = None,
    active: Annotated[str, typer.Option(help="Colour that takes traffic.")] = "blue",
    pinnable: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="A 0%-weight variant clients may still pin with X-ICD-Variant (repeatable).")] = None,
    exporter_port: Annotated[int, typer.Option(min=0, max=65535, help="Router metrics exporter port (0 = none).")] \
        = ROUTER_EXPORTER_PORT,
    state_dir: StateDir = None,
) -> None:
    """Start nginx (detached) routing the public model name to weighted variants."""
    from icd.errors import UserError
    from icd.io.ports import port_in_use
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import check_spec, parse_upstreams, parse_weights, start_exporter

    spec = check_spec(RouterSpec(port, public_model, parse_weights(variant or ["bert_baseline=100"]),
                                 parse_upstreams(upstream or [f"blue={LOOPBACK}:{TRITON_HTTP_PORT}"]), active,
                                 pinnable=list(pinnable or [])))
    if exporter_port and port_in_use(exporter_port):
        raise UserError(f"--exporter-port {exporter_port}: port in use (choose another, or 0 for none)")
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
    """Change variant weights with a graceful reload (no request dropped).

    A variant that gains traffic (weight 0 or absent before) must answer READY on the active upstream first; shifting
    traffic back to variants that already carry some is never blocked.
    """
    from icd.rollout.preflight import active_upstream, check_ready
    from icd.rollout.router_ops import parse_weights

    router = _running_router(_state(state_dir))
    weights = parse_weights(variant)
    before = router.spec.weights
    gaining = [name for name, weight in weights.items() if weight > 0 and before.get(name, 0) == 0]
    check_ready(active_upstream(router), gaining, where=f"the router's active upstream ({router.spec.active})")
    spec = router.set_weights(weights)
    typer.echo(f"generation {spec.generation}: {json.dumps(spec.weights)}")


@router_app.command("switch")
def router_switch(
    to: Annotated[str, typer.Option("--to", help="Colour to send all traffic to.")],
    state_dir: StateDir = None,
) -> None:
    """Send all traffic to another upstream colour immediately (no validation: see `icd switch`)."""
    spec = _running_router(_state(state_dir)).switch(to)
    typer.echo(f"generation {spec.generation}: active {spec.active}")


@router_app.command("mirror")
def router_mirror(
    variant: Annotated[str, typer.Option(help="Candidate model whose answers are compared (never returned).")]
    = "bert_icd",
    share: Annotated[float, typer.Option(help="Fraction of inference requests mirrored, within [0, 1].")] = 0.1,
    off: Annotated[bool, typer.Option(help="Stop mirroring (the comparator keeps its log and metrics).")] = False,
    comparator_port: Annotated[int, typer.Option(min=0, max=65535,
                                                 help="Port of the shadow comparator (its /metrics: icd_shadow_*); "
                                                      "0 = any free port.")] = SHADOW_COMPARATOR_PORT,
    state_dir: StateDir = None,
) -> None:
    """Shadow traffic: mirror a share of live requests to a candidate and judge its answers (icd_shadow_*)."""
    import dataclasses

    from icd.errors import UserError
    from icd.rollout.router_config import MirrorSpec
    from icd.rollout.router_ops import ensure_comparator

    router = _running_router(_state(state_dir))
    if off:
        spec = router.apply(lambda s: dataclasses.replace(s, mirror=None))
        typer.echo(f"generation {spec.generation}: mirroring off")
        return
    if not 0.0 <= share <= 1.0:
        raise UserError(f"--share must be within [0, 1], got {share:g}")
    from icd.rollout.preflight import active_upstream, check_ready

    check_ready(active_upstream(router), [variant], where=f"the router's active upstream ({router.spec.active})")
    addr = ensure_comparator(router, comparator_port)
    spec = router.apply(lambda s: dataclasses.replace(s, mirror=MirrorSpec(variant, share, addr)))
    typer.echo(f"generation {spec.generation}: mirroring {share:.0%} of inference requests to {variant}; comparator "
               f"http://{addr}/metrics (icd_shadow_*), log {router.workdir / 'shadow.jsonl'}")


@router_app.command("status")
def router_status(state_dir: StateDir = None) -> None:
    """Print the live routing (router.json) and whether nginx runs."""
    from icd.rollout.router_ops import comparator_addr

    router = _router(_state(state_dir))
    pid = router.master_pid()
    typer.echo(json.dumps({"running": pid is not None, "pid": pid, "comparator": comparator_addr(router),
                           **router.spec.to_dict()}, indent=2))


@router_app.command("down")
def router_down(state_dir: StateDir = None) -> None:
    """Stop the router (graceful), its exporter and its shadow comparator, and wait for them."""
    from icd.rollout.router_ops import stop_comparator, stop_exporter

    router = _router(_state(state_dir))
    stopped = [name for name, was in (("nginx", router.stop()), ("exporter", stop_exporter(router)),
                                      ("comparator", stop_comparator(router))) if was]
    typer.echo(f"stopped: {' '.join(stopped)}" if stopped else "nothing running")


# --- A/B ----------------------------------------------------------------------------------------------------------
def ab(
    model_a: Annotated[str, typer.Option(help="Variant A (the reference).")] = "bert_baseline",
    model_b: Annotated[str, typer.Option(help="Variant B (the challenger).")] = "bert_icd",
    duration: Annotated[str, typer.Option(help="Load duration: 1800, 30s, 5m, 1h30m.")] = "60s",
    traffic_split: Annotated[str, typer.Option(help="A:B traffic percentages (each request assigned at random).")]
    = "50:50",
    report: Annotated[Path, typer.Option(help="JSON report (the HTML goes next to it).")]
    = Path("results/ab_test_results.json"),
    rate: Annotated[float, typer.Option(help="Open-loop requests per second (0 = closed loop with --concurrency "
                                             "workers).")] = 20.0,
    concurrency: Annotated[int, typer.Option(help="Most requests in flight (closed loop: workers).")] = 8,
    block: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="Time-block length of the comparison (default: 2s, or duration/30 for long runs).")] = None,
    endpoint: Annotated[str, typer.Option(callback=lambda value: url_option(value, "--endpoint"),
                                          help="Triton HTTP endpoint (used when no router runs).")] = DEFAULT_ENDPOINT,
    inputs: Annotated[str, typer.Option(help="'text' (held-out docstrings) or 'synthetic' (random ids).")] = "text",
    seq_len: Annotated[int, typer.Option(help="Tokens per request.")] = 64,
    agreement_n: Annotated[int, typer.Option(help="Inputs sent to both variants for output agreement.")] = 32,
    task: Annotated[Optional[str], typer.Option(  # noqa: UP007
        help="'embedding' or 'classifier' (default: from the output's name).")] = None,
    state_dir: StateDir = None,
) -> None:
    """A/B test through the router: blocked latency comparison, p95, errors, throughput, output agreement.

    Uses the router of `icd router up` when one runs, else a temporary router in front of --endpoint. Exit 0 with
    a verdict, 3 when inconclusive (too little traffic, or time blocks that disagree), 2 on a bad input.
    """
    from icd.errors import UserError
    from icd.load.report import check_writable
    from icd.rollout.ab import ABSpec, conclusion_text, run_ab, run_ab_at_endpoint, verdict_table_text, write_ab_report
    from icd.rollout.agreement import OutputTask
    from icd.rollout.payloads import payloads_for
    from icd.rollout.weights import parse_split

    if task is not None and task not in {t.value for t in OutputTask}:
        raise UserError(f"--task {task!r}: expected 'embedding' or 'classifier'")
    spec = ABSpec(model_a, model_b, _seconds(duration, "--duration"), parse_split(traffic_split), concurrency,
                  agreement_n, inputs=inputs, rate=rate or None,
                  block_s=_seconds(block, "--block") if block is not None else None,
                  task=OutputTask(task) if task else None)
    check_writable(report)  # before the run: an A/B's results are never lost to a bad --report
    payloads = payloads_for(inputs, max(agreement_n, 32), seq_len)
    running = _router(_state(state_dir))
    mode = "closed loop" if spec.rate is None else f"{spec.rate:g} req/s open loop"
    typer.echo(f"A/B {model_b} vs {model_a}: {spec.duration_s:g}s, split {traffic_split}, {mode}, blocks of "
               f"{spec.blocks_of:g}s")
    if running.master_pid() is not None:
        typer.echo(f"through the running router {running.url}")
        result = run_ab(running, spec, payloads)
        json_path, html_path = write_ab_report(result, report)
    else:
        typer.echo(f"through a temporary router in front of {endpoint}")
        result, json_path, html_path = run_ab_at_endpoint(endpoint, spec, payloads, report, DEFAULT_PUBLIC_MODEL)
    typer.echo(verdict_table_text(result.verdicts))
    typer.echo(f"latency  {conclusion_text(result)}")
    typer.echo(f"report   {json_path}\nhtml     {html_path}")
    if not result.conclusive:
        raise SystemExit(EXIT_INCONCLUSIVE)


# --- canary -------------------------------------------------------------------------------------------------------
def _provider(prometheus_url: str | None, router):
    from icd.rollout.providers import LogProvider, PrometheusProvider
    from icd.rollout.shadow import SHADOW_LOG

    if prometheus_url:
        return PrometheusProvider(prometheus_url)
    return LogProvider(router.access_log, router.workdir / SHADOW_LOG)


def _check_prometheus(prometheus_url: str | None) -> None:
    """Before anything starts: a --prometheus-url that does not answer as Prometheus is a user error (exit 2).
    Once a rollout runs, a Prometheus outage fails that analysis instead (the rollout holds, then rolls back)."""
    if not prometheus_url:
        return
    from icd.errors import UserError
    from icd.monitor.client import PrometheusClient, PrometheusQueryError, PrometheusUnavailable

    try:
        with PrometheusClient(prometheus_url, timeout_s=5.0) as client:
            client.query("vector(1)")
    except PrometheusUnavailable as exc:
        raise UserError(f"--prometheus-url: {exc}") from None
    except PrometheusQueryError as exc:
        raise UserError(f"--prometheus-url {prometheus_url}: Prometheus rejected a trivial query ({exc})") from None


def _traffic_line(router_url: str, load_rate: float | None, inputs: str) -> str:
    if load_rate:
        return (f"traffic  generated here by the load-test webhook: {load_rate:g} req/s of {inputs} inputs through "
                f"{router_url}")
    return (f"traffic  judged on live requests through {router_url} — none is generated here; send traffic to it "
            f"(or give --load-rate N): without it every analysis is 'no data' and the rollout ends inconclusive")


def _exit_for(outcome: str) -> int:
    from icd.rollout.phase import RolloutOutcome

    if outcome == RolloutOutcome.PROMOTED.value:
        return 0
    return EXIT_INCONCLUSIVE if outcome == RolloutOutcome.INCONCLUSIVE.value else EXIT_FAILED


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
    max_no_data: Annotated[int, typer.Option(help="Analyses without data before the rollout ends inconclusive.")]
    = 5,
    strategy: Annotated[str, typer.Option(help="canary (weights), ab (header/cookie match) or mirror (shadow).")]
    = "canary",
    match_header: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="ab: NAME=VALUE (or NAME=~REGEX): matching requests go to the canary (repeatable).")] = None,
    match_cookie: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="ab: COOKIE=VALUE: matching requests go to the canary (repeatable).")] = None,
    mirror_share: Annotated[float, typer.Option(help="Share of requests mirrored to the canary [0, 1] (mirror "
                                                     "strategy; with canary: adds an output-agreement gate).")] = 0.0,
    min_agreement: Annotated[float, typer.Option(help="Output agreement gate on mirrored requests (cosine mean "
                                                      "for embeddings, argmax agreement for classifiers).")] = 0.99,
    load_rate: LoadRate = None,
    load_inputs: Annotated[str, typer.Option(help="Load-test inputs: 'text' or 'synthetic'.")] = "text",
    webhook: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="TYPE=URL (repeatable): pre-rollout, rollout, confirm-promotion or post-rollout webhook.")] = None,
    validate_first: Annotated[bool, typer.Option("--validate", help="Run the deployment checks on the canary "
                                                                    "before any traffic moves.")] = False,
    prometheus_url: PrometheusUrl = None,
    endpoint: Annotated[str, typer.Option(callback=lambda value: url_option(value, "--endpoint"),
                                          help="Triton HTTP endpoint (when a router must be started).")]
    = DEFAULT_ENDPOINT,
    router_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of a router started here.")] = ROUTER_PORT,
    resume: Annotated[bool, typer.Option(help="Resume the rollout in the state folder.")] = False,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535,
                                              help="Serve the controller's own metrics here (0 = off).")] = 0,
    state_dir: StateDir = None,
) -> None:
    """Progressive delivery: advance while the analysis passes; roll back after --threshold failures.

    Exit 0 promoted, 1 rolled back (or refused by a pre-rollout webhook), 3 inconclusive (no traffic to judge).
    """
    from icd.rollout.canary_build import CanaryFlags

    state = _state(state_dir)
    _check_prometheus(prometheus_url)
    flags = None if resume else CanaryFlags(
        primary=baseline, canary=model, step=traffic_percentage, max_weight=max_weight,
        interval_s=_seconds(interval, "--interval"),
        monitor_duration_s=_seconds(monitor_duration, "--monitor-duration"),
        threshold=threshold, alert_threshold=alert_threshold, error_rate_diff=error_rate_diff,
        min_samples=min_samples, strategy=_canary_strategy(strategy), match_header=list(match_header or []),
        match_cookie=list(match_cookie or []), mirror_share=mirror_share, min_agreement=min_agreement,
        load_rate=load_rate, load_inputs=load_inputs, webhooks=list(webhook or []), validate=validate_first,
        max_no_data=max_no_data)
    spec, scheduler, router_url = _start_canary(state, flags, endpoint, router_port, prometheus_url)
    final = _watch_canary(spec, scheduler, router_url, load_inputs, metrics_port)
    code = _exit_for(final.outcome) if final.phase.is_terminal else 0
    if code:
        raise SystemExit(code)


def _canary_strategy(strategy: str):
    """``--strategy`` as a :class:`Strategy` the canary controller runs (blue-green is `icd switch`)."""
    from icd.errors import UserError
    from icd.rollout.canary_spec import Strategy

    try:
        chosen = Strategy(strategy)
    except ValueError:
        raise UserError(f"--strategy {strategy!r}: expected canary, ab or mirror (blue-green: `icd switch`)") from None
    if chosen is Strategy.BLUEGREEN:
        raise UserError("--strategy bluegreen: use `icd switch --from blue --to green` (switch_traffic.py)")
    return chosen


def _start_canary(state: Path, flags, endpoint: str, router_port: int, prometheus_url: str | None):
    """Check, then start: the spec (from ``flags``, or the state folder's on --resume, ``flags`` None) and its
    models READY where traffic goes, the router (reused, or started on ``endpoint``), the scheduler on its first
    step. Returns (spec, scheduler, router URL); a wrong name or rule changes nothing."""
    from icd.rollout.canary_build import build_canary_spec
    from icd.rollout.preflight import active_upstream, check_ready, check_routed
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import ManagedRouter, check_match_rules, endpoint_addr, ensure_router
    from icd.rollout.scheduler import RolloutScheduler
    from icd.rollout.status_store import StatusStore
    from icd.rollout.strategies import match_rules
    from icd.rollout.webhooks import HookContext, HookRunner

    spec = StatusStore(state / "canary").load()[0] if flags is None else build_canary_spec(flags)
    check_match_rules(match_rules(spec), spec.primary)
    existing = _router(state)
    if existing.master_pid() is not None:
        check_ready(active_upstream(existing), [spec.primary, spec.canary],
                    where=f"the router's active upstream ({existing.spec.active})")
    else:
        check_ready(endpoint_addr(endpoint), [spec.primary, spec.canary], where="--endpoint")
    router, started = ensure_router(state / "router", RouterSpec(
        router_port, DEFAULT_PUBLIC_MODEL, {spec.primary: 100.0}, {"blue": [endpoint_addr(endpoint)]}, "blue"))
    if started:
        typer.echo(f"router   started at {router.url} (stop with `icd router down`)")
    scheduler = RolloutScheduler(ManagedRouter(router), _provider(prometheus_url, router), state / "canary")
    scheduler.hooks = HookRunner(spec, HookContext(router.url, active_upstream(router), router.spec.public_model))
    if flags is not None:
        scheduler.begin(spec)
        check_routed(router, [spec.primary])  # the router now sends every request to the primary: prove it
    return spec, scheduler, router.url


def _watch_canary(spec, scheduler, router_url: str, load_inputs: str, metrics_port: int):
    """Run the controller to the end, a line per tick (and the controller's metrics on ``metrics_port``); returns
    the final status."""
    from icd.rollout.canary_spec import BuiltinHook
    from icd.rollout.controller import run_controller
    from icd.rollout.controller_metrics import CanaryRecorder

    typer.echo(f"canary   {spec.canary} vs {spec.primary} ({spec.strategy.value}): step {spec.step_weight:g}%, max "
               f"{spec.max_weight:g}%, interval {spec.interval_s:g}s, threshold {spec.threshold}, iterations "
               f"{spec.iterations}; state {scheduler.store.path}")
    rate = next((float(h.metadata.get("rate", 0)) for h in spec.webhooks if h.builtin is BuiltinHook.LOAD_TEST), None)
    typer.echo(_traffic_line(router_url, rate, load_inputs))
    recorder = CanaryRecorder(metrics_port).start()

    def show(status) -> None:
        last = scheduler.log.last()
        recorder.record(spec, status, last)
        routes = f" [{last.routes}]" if last and last.routes else ""
        typer.echo(f"{time.strftime('%H:%M:%S')} tick {status.tick}: {status.phase.value} weight "
                   f"{status.canary_weight:g}% failed {status.failed_checks} — {last.action.value}: {last.reason}"
                   f"{routes}")

    try:
        final = run_controller(scheduler, on_tick=show)
    finally:
        recorder.stop()
    typer.echo(f"canary   {final.phase.value}{': ' + final.outcome if final.outcome else ''} "
               f"(decisions: {scheduler.log.path})")
    return final


@canary_app.command("monitor")
def canary_monitor(
    baseline: Annotated[str, typer.Option(help="The primary model.")] = "bert_baseline",
    canary: Annotated[str, typer.Option(help="The canary model.")] = "bert_icd",
    alert_threshold: Annotated[float, typer.Option(help="Alert when canary p95 exceeds baseline by this %.")] = 5.0,
    error_rate_diff: Annotated[float, typer.Option(help="Alert above this error-rate difference (pp).")] = 1.0,
    interval: Annotated[str, typer.Option(help="Analysis window and period.")] = "60s",
    duration: Annotated[str, typer.Option(help="Keep watching this long (0 = one analysis).")] = "0",
    min_samples: Annotated[int, typer.Option(help="Requests per variant per window needed to judge.")] = 20,
    prometheus_url: PrometheusUrl = None,
    state_dir: StateDir = None,
) -> None:
    """Compare canary to baseline (p95 increase %, error-rate difference) on the router's traffic.

    Exit 0 when every analysis passed, 1 if an alert fired (or the metrics could not be read), 3 when no analysis
    had traffic to judge.
    """
    from pydantic import ValidationError

    from icd.io.atomic import write_json_atomic
    from icd.rollout.analysis import analyse
    from icd.rollout.canary_spec import CanarySpec, spec_error_text
    from icd.rollout.phase import CheckVerdict

    from icd.errors import UserError

    state = _state(state_dir)
    router = _router(state)
    window = _seconds(interval, "--interval")
    _check_prometheus(prometheus_url)
    if router.master_pid() is not None:
        unknown = [m for m in (baseline, canary) if m not in router.spec.weights]
        if unknown:
            raise UserError(f"{', '.join(map(repr, unknown))}: not a variant of the router at {router.url} "
                            f"(its variants: {sorted(router.spec.weights)})")
    try:
        spec = CanarySpec.progressive(baseline, canary, alert_threshold=alert_threshold,
                                      error_rate_diff_pp=error_rate_diff, interval_s=window, min_samples=min_samples)
    except ValidationError as exc:
        raise UserError(f"canary monitor: {spec_error_text(exc)}") from None
    provider = _provider(prometheus_url, router)
    source = f"Prometheus {prometheus_url}" if prometheus_url else f"the router's access log {router.access_log}"
    typer.echo(f"judging {canary} vs {baseline} on live requests through the router (from {source}); this command "
               f"sends none")
    deadline = time.monotonic() + _seconds(duration, "--duration", zero_allowed=True)  # 0: one analysis
    verdicts, results = [], []
    while True:
        result = analyse(spec, provider)
        results.append({"t": time.time(), **result.to_dict()})
        verdicts.append(result.verdict)
        label = {CheckVerdict.FAIL: "ALERT ", CheckVerdict.PASS: "ok    "}.get(result.verdict, "nodata")
        typer.echo(f"{time.strftime('%H:%M:%S')} {label} {result.summary()}")
        for c in result.checks:
            if c.how.startswith("provider error"):
                typer.echo(f"         {c.name}: {c.how}")
        if time.monotonic() + window > deadline:
            break
        time.sleep(window)
    write_json_atomic(state / "canary" / "monitor.json", {"baseline": baseline, "canary": canary, "results": results})
    if (state / "canary" / "canary_state.json").exists():
        from icd.rollout.status_store import StatusStore

        _, status = StatusStore(state / "canary").load()
        typer.echo(f"controller: {status.phase.value}, canary weight {status.canary_weight:g}%, "
                   f"failed checks {status.failed_checks}")
    if CheckVerdict.FAIL in verdicts:
        raise SystemExit(EXIT_FAILED)
    if all(v is CheckVerdict.NO_DATA for v in verdicts):
        typer.echo("inconclusive: no analysis had enough traffic to judge (send traffic through the router)")
        raise SystemExit(EXIT_INCONCLUSIVE)


@canary_app.command("status")
def canary_status(state_dir: StateDir = None) -> None:
    """Print the rollout's persisted status and its last decisions."""
    from icd.rollout.decision_log import DecisionLog
    from icd.rollout.status_store import DECISIONS_FILE, StatusStore

    folder = _state(state_dir) / "canary"
    spec, status = StatusStore(folder).load()
    decisions = DecisionLog(folder / DECISIONS_FILE).read()
    typer.echo(json.dumps({"spec": spec.model_dump(mode="json"), "status": status.to_dict()}, indent=2))
    for d in decisions[-5:]:
        typer.echo(f"tick {d.tick}: {d.action.value} — {d.reason}")


# --- blue-green ---------------------------------------------------------------------------------------------------
def validate(
    endpoint: Annotated[str, typer.Option(callback=lambda value: url_option(value, "--endpoint"),
                                          help="Triton HTTP endpoint to validate.")] = DEFAULT_ENDPOINT,
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
    from icd.load.report import check_writable
    from icd.rollout import validation
    from icd.rollout.payloads import payloads_for

    if report is not None:
        check_writable(report)  # before the checks run
    _check_golden(golden)
    if record_golden is not None:
        validation.record_golden(endpoint, model, payloads_for("text", validation.DEFAULT_GOLDEN_N, 64), record_golden)
        typer.echo(f"golden   {record_golden}")
        return
    _check_repository(model_repository)
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
    min_samples: Annotated[int, typer.Option(help="Routed requests per watch window needed to judge it.")] = 10,
    golden: Annotated[Optional[Path], typer.Option(help="Golden file for the target.")] = None,  # noqa: UP007
    model_repository: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        help="Exported repository for reference outputs.")] = None,
    load_rate: LoadRate = None,
    state_dir: StateDir = None,
) -> None:
    """Blue-green switch: validate the target, switch, watch, switch back on failure.

    Exit 0 switched, 1 refused or switched back, 3 inconclusive (no routed traffic to judge: switched back).
    """
    from icd.errors import UserError
    from icd.rollout.bluegreen import SwitchOutcome, SwitchSpec, switch_traffic

    if from_ == to:
        raise UserError(f"--from {from_} --to {to}: a switch needs two colours")
    _check_golden(golden)
    state = _state(state_dir)
    router = _running_router(state)
    weights = router.spec.weights
    _check_repository(model_repository)
    repo = model_repository if model_repository is not None else (
        DEFAULT_REPOSITORY if golden is None and DEFAULT_REPOSITORY.is_dir() else None)
    spec = SwitchSpec(from_, to, model or max(weights, key=lambda k: weights[k]),
                      _seconds(validation_time, "--validation-time"),
                      _seconds(precheck_duration, "--precheck-duration"),
                      _seconds(watch_interval, "--watch-interval"), slo_p95_ms, max_error_rate, golden, repo,
                      min_samples, load_rate)
    typer.echo(f"switch   {from_} -> {to} ({spec.model}), watch {spec.validation_time_s:g}s every "
               f"{spec.watch_interval_s:g}s")
    typer.echo(_traffic_line(router.url, load_rate, "text"))
    result = switch_traffic(router, spec, state / "bluegreen")
    for d in result.decisions:
        typer.echo(f"  tick {d['tick']}: {d['action']} — {d['reason']}")
    typer.echo(f"{result.outcome.value}: {result.reason}")
    if result.outcome is SwitchOutcome.INCONCLUSIVE:
        raise SystemExit(EXIT_INCONCLUSIVE)
    if result.outcome is not SwitchOutcome.SWITCHED:
        raise SystemExit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to `app`."""
    app.add_typer(router_app, name="router")
    app.add_typer(canary_app, name="canary")
    app.command("ab")(ab)
    app.command("validate")(validate)
    app.command("switch")(switch)
