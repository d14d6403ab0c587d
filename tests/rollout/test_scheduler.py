"""The rollout state machine tick by tick, with small fakes behind the router and provider Protocols; webhooks
against a real local HTTP server."""

from __future__ import annotations

import http.server
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.errors import ArtefactError
from icd.rollout.analysis import AnalysisResult, check_threshold
from icd.rollout.canary_spec import (
    BuiltinHook,
    CanarySpec,
    HeaderMatch,
    HookType,
    MetricCheck,
    MetricKind,
    Strategy,
    ThresholdRange,
    Webhook,
)
from icd.rollout.decision_log import Action, DecisionLog
from icd.rollout.phase import CheckVerdict, RolloutOutcome, RolloutPhase
from icd.rollout.providers import NoValuesFound, ProviderError
from icd.rollout.scheduler import RolloutScheduler, decide
from icd.rollout.status_store import DECISIONS_FILE, CanaryStatus
from icd.rollout.strategies import routes_for
from icd.rollout.webhooks import HookContext, HookRunner


class FakeRouter:
    def __init__(self) -> None:
        self.calls = []

    def set_routes(self, routes) -> None:
        self.calls.append(routes)

    @property
    def weights(self) -> list[dict[str, float]]:
        return [dict(r.weights) for r in self.calls if r.weights is not None]


class FakeProvider:
    """Returns queued values per check kind; ``None`` = no data, an exception instance is raised."""

    def __init__(self, values: list[float | None | Exception]) -> None:
        self.values = list(values)

    def measure(self, check, ctx):
        value = self.values[0] if len(self.values) == 1 else self.values.pop(0)
        if value is None:
            raise NoValuesFound("nothing yet")
        if isinstance(value, Exception):
            raise value
        return value, "fake"


def _spec(**kw) -> CanarySpec:
    check = MetricCheck(name="p95", kind=MetricKind.P95_LATENCY_INCREASE_PCT, threshold_range=ThresholdRange(max=5))
    base = dict(primary="base", canary="new", interval_s=1, threshold=2, step_weight=20, max_weight=60,
                metrics=[check])
    return CanarySpec(**{**base, **kw})


def _run(tmp_path, values, hooks=None, **kw):
    router = FakeRouter()
    spec = _spec(**kw)
    runner = HookRunner(spec, HookContext("http://127.0.0.1:1", "127.0.0.1:1")) if hooks else None
    sched = RolloutScheduler(router, FakeProvider(values), tmp_path, clock=lambda: 1000.0, hooks=runner)
    sched.begin(spec)
    phases = []
    for _ in range(20):
        status = sched.tick()
        phases.append(status.phase)
        if status.phase.is_terminal:
            break
    return router, sched, status, phases


def test_healthy_canary_steps_up_then_promotes(tmp_path):
    router, sched, status, _ = _run(tmp_path, [1.0])
    assert status.phase is RolloutPhase.SUCCEEDED and status.outcome == RolloutOutcome.PROMOTED.value
    assert [w["new"] for w in router.weights] == [0.0, 20.0, 40.0, 60.0, 100.0]  # one reload per change
    actions = [d.action for d in DecisionLog(tmp_path / DECISIONS_FILE).read()]
    assert actions == [Action.START, Action.ADVANCE, Action.ADVANCE, Action.PROMOTE, Action.FINALISE]
    assert status.history == ["Progressing", "Promoting", "Succeeded"]


def test_failing_canary_rolls_back_after_threshold_failed_checks(tmp_path):
    router, sched, status, phases = _run(tmp_path, [30.0], threshold=3)
    assert status.phase is RolloutPhase.FAILED and status.failed_checks == 3
    assert status.outcome == RolloutOutcome.ROLLED_BACK.value
    assert router.weights[-1] == {"base": 100.0, "new": 0.0}
    decisions = DecisionLog(tmp_path / DECISIONS_FILE).read()
    assert [d.action for d in decisions][-1] is Action.ROLLBACK
    assert decisions[-1].analysis["checks"][0]["value"] == 30.0  # evidence kept
    assert len(phases) == 1 + 3  # start + threshold analyses


def test_no_data_is_not_failure_but_does_not_advance(tmp_path):
    router, sched, status, _ = _run(tmp_path, [None, None, 1.0, 1.0, 1.0, 1.0], max_no_data=3)
    assert status.phase is RolloutPhase.SUCCEEDED and status.failed_checks == 0
    actions = [d.action for d in DecisionLog(tmp_path / DECISIONS_FILE).read()]
    assert actions[:3] == [Action.START, Action.HALT_NO_DATA, Action.HALT_NO_DATA]


def test_no_data_for_too_long_ends_inconclusive_and_rolled_back(tmp_path):
    router, _, status, _ = _run(tmp_path, [None], max_no_data=3)
    assert status.phase is RolloutPhase.FAILED and status.no_data_checks == 3
    assert status.outcome == RolloutOutcome.INCONCLUSIVE.value and "inconclusive" in status.reason
    assert router.weights[-1] == {"base": 100.0, "new": 0.0}


def test_provider_error_counts_as_failed_check_with_its_reason(tmp_path):
    _, _, status, _ = _run(tmp_path, [ProviderError("Prometheus at http://x answered HTML")], threshold=2)
    assert status.phase is RolloutPhase.FAILED
    last = DecisionLog(tmp_path / DECISIONS_FILE).read()[-1]
    assert "answered HTML" in last.analysis["checks"][0]["how"]


def test_iterations_hold_at_max_weight(tmp_path):
    router, _, status, _ = _run(tmp_path, [1.0], step_weight=10, max_weight=10, iterations=3)
    assert status.phase is RolloutPhase.SUCCEEDED
    assert [w["new"] for w in router.weights] == [0.0, 10.0, 100.0]


@pytest.mark.parametrize("strategy,extra", [
    (Strategy.AB, dict(match=[HeaderMatch(header="X-Canary", value="always")])),
    (Strategy.MIRROR, dict(mirror_share=0.25)),
])
def test_ab_and_mirror_keep_the_canary_at_zero_weight_until_promoted(tmp_path, strategy, extra):
    router, _, status, _ = _run(tmp_path, [1.0], strategy=strategy, iterations=2, **extra)
    assert status.phase is RolloutPhase.SUCCEEDED
    progressing = router.calls[1]
    assert progressing.weights == {"base": 100.0, "new": 0.0}
    if strategy is Strategy.AB:
        assert progressing.match[0].variant == "new" and progressing.match[0].header == "X-Canary"
        assert progressing.mirror is None
    else:
        assert progressing.mirror == ("new", 0.25) and not progressing.match
    assert router.calls[-1].weights == {"base": 0.0, "new": 100.0} and router.calls[-1].mirror is None


def test_bluegreen_switches_colour_and_back(tmp_path):
    router, _, status, _ = _run(tmp_path, [1.0, 50.0], strategy=Strategy.BLUEGREEN, primary="blue", canary="green",
                                model="m", threshold=1, iterations=3)
    assert status.phase is RolloutPhase.FAILED
    assert [r.active for r in router.calls] == ["blue", "green", "blue"]
    assert all(r.weights is None for r in router.calls)  # a colour switch keeps weights, rules and mirror


def test_a_canary_with_a_mirror_share_also_mirrors(tmp_path):
    spec = _spec(mirror_share=0.5, metrics=[MetricCheck(name="agree", kind=MetricKind.OUTPUT_AGREEMENT,
                                                        threshold_range=ThresholdRange(min=0.99))])
    routes = routes_for(spec, CanaryStatus(phase=RolloutPhase.PROGRESSING, canary_weight=20))
    assert routes.weights == {"base": 80.0, "new": 20.0} and routes.mirror == ("new", 0.5)
    with pytest.raises(ValueError, match="mirror_share"):
        _spec(metrics=spec.metrics)  # an agreement gate without mirrored traffic


@pytest.mark.parametrize("bad,needle", [
    (dict(mirror_share=1.5), "mirror_share"),
    (dict(strategy=Strategy.MIRROR), "mirror_share"),
    (dict(strategy=Strategy.AB), "match"),
    (dict(canary="bert icd"), "canary must match"),
    (dict(webhooks=[Webhook(name="x", type=HookType.ROLLOUT, builtin=BuiltinHook.READY)],
          strategy=Strategy.BLUEGREEN), "model"),
])
def test_bad_specs_name_the_field(bad, needle):
    with pytest.raises(ValueError, match=needle):
        _spec(**bad)


def test_crash_between_decision_and_status_save_is_recovered_not_redecided(tmp_path):
    router = FakeRouter()
    sched = RolloutScheduler(router, FakeProvider([1.0]), tmp_path, clock=lambda: 1000.0)
    spec = _spec()
    sched.begin(spec)
    sched.tick()  # START -> weight 20
    saved_spec, saved_status = sched.store.load()
    sched.tick()  # ADVANCE -> weight 40 ... now pretend the status save of this tick never happened:
    sched.store.save(saved_spec, saved_status)
    restarted = RolloutScheduler(FakeRouter(), FakeProvider([99.0]), tmp_path, clock=lambda: 1001.0)
    status = restarted.tick()
    assert status.canary_weight == 40.0 and status.tick == 2  # the logged decision, not a new (failing) one
    assert restarted.router.weights == [{"base": 60.0, "new": 40.0}]
    assert [d.tick for d in DecisionLog(tmp_path / DECISIONS_FILE).read()] == [1, 2]


def test_cannot_begin_over_an_unfinished_rollout_and_a_finished_log_is_moved_aside(tmp_path):
    sched = RolloutScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    with pytest.raises(ArtefactError, match="in progress"):
        sched.begin(_spec())
    while not sched.tick().phase.is_terminal:
        pass
    sched.begin(_spec())  # a new rollout after a finished one starts from a fresh decision log
    assert DecisionLog(tmp_path / DECISIONS_FILE).read() == [] and list(tmp_path.glob("decisions.*.jsonl"))
    assert sched.tick().tick == 1


def test_torn_last_line_is_ignored_and_moved_aside_on_the_next_append(tmp_path):
    sched = RolloutScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    sched.tick()
    with (tmp_path / DECISIONS_FILE).open("a") as f:
        f.write('{"tick": 2, "act')  # the controller died while writing
    assert [d.tick for d in DecisionLog(tmp_path / DECISIONS_FILE).read()] == [1]
    sched.tick()
    assert [d.tick for d in DecisionLog(tmp_path / DECISIONS_FILE).read()] == [1, 2]
    assert (tmp_path / (DECISIONS_FILE + ".torn")).read_text().startswith('{"tick": 2, "act')


def test_a_corrupt_decision_line_is_an_error_not_skipped(tmp_path):
    sched = RolloutScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    sched.tick()
    sched.tick()
    lines = (tmp_path / DECISIONS_FILE).read_text().splitlines()
    (tmp_path / DECISIONS_FILE).write_text(lines[0] + "\n" + "garbage}\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(ArtefactError, match=r"line 2 is not a decision"):
        sched.tick()


@pytest.mark.parametrize("value,lo,hi,ok", [(5, None, 5, True), (5.01, None, 5, False), (-1, 0, None, False),
                                            (0, 0, 0, True)])
def test_check_threshold_bounds_are_inclusive(value, lo, hi, ok):
    assert check_threshold(value, ThresholdRange(min=lo, max=hi)) is ok


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list(CheckVerdict)), min_size=1, max_size=30),
       st.integers(1, 4), st.sampled_from([10.0, 25.0, 50.0]), st.integers(1, 3))
def test_state_machine_invariants(verdicts, threshold, step, iterations):
    spec = _spec(threshold=threshold, step_weight=step, max_weight=50, iterations=iterations, max_no_data=3)
    status = CanaryStatus()
    fails = 0
    for verdict in verdicts:
        if status.phase.is_terminal:
            break
        analysis = AnalysisResult(verdict, ()) if status.phase is RolloutPhase.PROGRESSING else None
        before = status
        action, _, status = decide(spec, status, analysis)
        fails += analysis is not None and verdict is CheckVerdict.FAIL
        if status.phase is RolloutPhase.PROGRESSING:
            assert 0 < status.canary_weight <= spec.max_weight
            assert status.canary_weight >= before.canary_weight  # never steps down while progressing
        assert (status.phase is RolloutPhase.FAILED) == (fails >= threshold or status.no_data_checks >= 3)
        if action is Action.ADVANCE or action is Action.PROMOTE:
            assert verdict is CheckVerdict.PASS
    if status.phase is RolloutPhase.FAILED:
        assert status.canary_weight == 0.0 and status.outcome in ("rolled back", "inconclusive")


def test_controller_runs_to_the_end_and_records_its_metrics(tmp_path):
    from icd.rollout.controller import run_controller
    from icd.rollout.controller_metrics import CanaryRecorder

    clock = [1000.0]
    router = FakeRouter()
    sched = RolloutScheduler(router, FakeProvider([1.0]), tmp_path, clock=lambda: clock[0])
    spec = _spec()
    sched.begin(spec)
    recorder = CanaryRecorder()
    sleeps = []

    def fake_sleep(s):
        sleeps.append(s)
        clock[0] += s

    final = run_controller(sched, on_tick=lambda st: recorder.record(spec, st, sched.log.last()), sleep=fake_sleep)
    assert final.phase is RolloutPhase.SUCCEEDED and sleeps == [1.0] * (final.tick - 1)
    get = recorder.registry.get_sample_value
    assert get("icd_canary_weight", {"canary": "new"}) == 100.0
    assert get("icd_canary_phase", {"canary": "new", "phase": "Succeeded"}) == 1.0
    assert get("icd_canary_decisions_total", {"canary": "new", "action": "advance"}) == 2.0


def test_second_controller_on_the_same_state_is_refused(tmp_path):
    import fcntl

    from icd.errors import UserError
    from icd.rollout.controller import LOCK_FILE, run_controller

    sched = RolloutScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    with (tmp_path / LOCK_FILE).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another controller"):
            run_controller(sched)


# --- webhooks against a real HTTP server ----------------------------------------------------------------------
class _Hooks(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/slow":  # a hook that never answers in time: hold the request until the test ends,
            self.server.released.wait(30)  # then close without an answer (writing to the gone caller would
            return  # be a BrokenPipeError traceback on the test run's stderr)
        code = {"/ok": 200, "/fail": 503}.get(self.path, 404)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"nope" if code >= 300 else b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    server.released = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.released.set()
    server.shutdown()
    server.server_close()
    thread.join()


# the failing hook answers at once but gets a generous timeout (a loaded CI host must not turn its 503 into a
# timeout); the slow one never answers, so its short timeout is the only outcome it can have
@pytest.mark.parametrize("path,timeout_s,needle", [("/fail", 30.0, "HTTP 503"),
                                                   ("/slow", 0.3, "no answer within 0.3s")])
def test_a_pre_rollout_webhook_that_fails_or_times_out_refuses_the_rollout(tmp_path, hook_server, path, timeout_s,
                                                                           needle):
    hooks = [Webhook(name="gate", type=HookType.PRE_ROLLOUT, url=hook_server + path, timeout_s=timeout_s)]
    router, _, status, _ = _run(tmp_path, [1.0], hooks=True, webhooks=hooks, threshold=2)
    assert status.phase is RolloutPhase.FAILED and status.outcome == RolloutOutcome.REFUSED.value
    assert needle in status.reason
    assert all(w["new"] == 0.0 for w in router.weights)  # never routed to the canary


def test_a_rollout_webhook_failure_fails_the_analysis(tmp_path, hook_server):
    hooks = [Webhook(name="smoke", type=HookType.ROLLOUT, url=hook_server + "/fail")]
    _, _, status, _ = _run(tmp_path, [1.0], hooks=True, webhooks=hooks, threshold=2)
    assert status.outcome == RolloutOutcome.ROLLED_BACK.value and "webhook smoke" in status.reason


def test_confirm_promotion_holds_until_it_passes_and_post_rollout_runs_at_the_end(tmp_path, hook_server):
    hooks = [Webhook(name="gate", type=HookType.CONFIRM_PROMOTION, url=hook_server + "/fail"),
             Webhook(name="notify", type=HookType.POST_ROLLOUT, url=hook_server + "/ok")]
    router = FakeRouter()
    spec = _spec(step_weight=60, webhooks=hooks)
    sched = RolloutScheduler(router, FakeProvider([1.0]), tmp_path,
                             hooks=HookRunner(spec, HookContext("http://127.0.0.1:1", "127.0.0.1:1")))
    sched.begin(spec)
    actions = [sched.tick().phase for _ in range(4)]
    assert actions[-1] is RolloutPhase.PROGRESSING
    assert [d.action for d in sched.log.read()][-2:] == [Action.WAIT_PROMOTION, Action.WAIT_PROMOTION]
    sched.hooks.spec.webhooks[0].url = hook_server + "/ok"
    while not (status := sched.tick()).phase.is_terminal:
        pass
    assert status.phase is RolloutPhase.SUCCEEDED and status.post_rollout[0]["ok"]
