"""The canary state machine tick by tick, with small fakes behind the router and provider Protocols."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.errors import ArtefactError
from icd.rollout.analysis import AnalysisResult, check_threshold
from icd.rollout.canary_spec import CanarySpec, MetricCheck, MetricKind, ThresholdRange
from icd.rollout.decision_log import Action, DecisionLog
from icd.rollout.phase import CheckVerdict, RolloutPhase
from icd.rollout.providers import NoValuesFound, ProviderError
from icd.rollout.scheduler import CanaryScheduler, decide
from icd.rollout.status_store import DECISIONS_FILE, CanaryStatus


class FakeRouter:
    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []

    def set_weights(self, weights: dict[str, float]) -> None:
        self.calls.append(dict(weights))


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


def _run(tmp_path, values, **kw):
    router = FakeRouter()
    sched = CanaryScheduler(router, FakeProvider(values), tmp_path, clock=lambda: 1000.0)
    sched.begin(_spec(**kw))
    phases = []
    for _ in range(20):
        status = sched.tick()
        phases.append(status.phase)
        if status.phase.is_terminal:
            break
    return router, sched, status, phases


def test_healthy_canary_steps_up_then_promotes(tmp_path):
    router, sched, status, _ = _run(tmp_path, [1.0])
    assert status.phase is RolloutPhase.SUCCEEDED
    assert [c["new"] for c in router.calls] == [0.0, 20.0, 40.0, 60.0, 100.0, 100.0]
    actions = [d.action for d in DecisionLog(tmp_path / DECISIONS_FILE).read()]
    assert actions == [Action.START, Action.ADVANCE, Action.ADVANCE, Action.PROMOTE, Action.FINALISE]
    assert status.history == ["Progressing", "Promoting", "Succeeded"]


def test_failing_canary_rolls_back_after_threshold_failed_checks(tmp_path):
    router, sched, status, phases = _run(tmp_path, [30.0], threshold=3)
    assert status.phase is RolloutPhase.FAILED and status.failed_checks == 3
    assert router.calls[-1] == {"base": 100.0, "new": 0.0}
    decisions = DecisionLog(tmp_path / DECISIONS_FILE).read()
    assert [d.action for d in decisions][-1] is Action.ROLLBACK
    assert decisions[-1].analysis["checks"][0]["value"] == 30.0  # evidence kept
    assert len(phases) == 1 + 3  # start + threshold analyses


def test_no_data_is_not_failure_but_does_not_advance(tmp_path):
    router, sched, status, _ = _run(tmp_path, [None, None, 1.0, 1.0, 1.0, 1.0], max_no_data=3)
    assert status.phase is RolloutPhase.SUCCEEDED and status.failed_checks == 0
    actions = [d.action for d in DecisionLog(tmp_path / DECISIONS_FILE).read()]
    assert actions[:3] == [Action.START, Action.HALT_NO_DATA, Action.HALT_NO_DATA]


def test_no_data_for_too_long_rolls_back(tmp_path):
    _, _, status, _ = _run(tmp_path, [None], max_no_data=3)
    assert status.phase is RolloutPhase.FAILED and status.no_data_checks == 3


def test_provider_error_counts_as_failed_check(tmp_path):
    _, _, status, _ = _run(tmp_path, [ProviderError("down")], threshold=2)
    assert status.phase is RolloutPhase.FAILED


def test_iterations_hold_at_max_weight(tmp_path):
    router, _, status, _ = _run(tmp_path, [1.0], step_weight=10, max_weight=10, iterations=3)
    assert status.phase is RolloutPhase.SUCCEEDED
    assert [c["new"] for c in router.calls] == [0.0, 10.0, 10.0, 10.0, 100.0, 100.0]


def test_crash_between_decision_and_status_save_is_recovered_not_redecided(tmp_path):
    router = FakeRouter()
    sched = CanaryScheduler(router, FakeProvider([1.0]), tmp_path, clock=lambda: 1000.0)
    spec = _spec()
    sched.begin(spec)
    sched.tick()  # START -> weight 20
    saved_spec, saved_status = sched.store.load()
    sched.tick()  # ADVANCE -> weight 40 ... now pretend the status save of this tick never happened:
    sched.store.save(saved_spec, saved_status)
    restarted = CanaryScheduler(FakeRouter(), FakeProvider([99.0]), tmp_path, clock=lambda: 1001.0)
    status = restarted.tick()
    assert status.canary_weight == 40.0 and status.tick == 2  # the logged decision, not a new (failing) one
    assert restarted.router.calls == [{"base": 60.0, "new": 40.0}]
    assert [d.tick for d in DecisionLog(tmp_path / DECISIONS_FILE).read()] == [1, 2]


def test_cannot_begin_over_an_unfinished_rollout(tmp_path):
    sched = CanaryScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    with pytest.raises(ArtefactError, match="in progress"):
        sched.begin(_spec())


def test_torn_decision_line_is_ignored_and_next_append_parses(tmp_path):
    log = DecisionLog(tmp_path / "d.jsonl")
    sched = CanaryScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    sched.tick()
    with (tmp_path / DECISIONS_FILE).open("a") as f:
        f.write('{"tick": 2, "act')
    sched.tick()
    ticks = [d.tick for d in DecisionLog(tmp_path / DECISIONS_FILE).read()]
    assert ticks == [1, 2]
    assert log.read() == []


@pytest.mark.parametrize("value,lo,hi,ok", [(5, None, 5, True), (5.01, None, 5, False), (-1, 0, None, False),
                                            (0, 0, 0, True)])
def test_check_threshold_bounds_are_inclusive(value, lo, hi, ok):
    assert check_threshold(value, ThresholdRange(min=lo, max=hi)) is ok


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="step_weight"):
        _spec(step_weight=80)
    with pytest.raises(ValueError, match="canary must differ"):
        _spec(canary="base")



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
        assert status.canary_weight == 0.0


def test_controller_runs_to_the_end_and_records_its_metrics(tmp_path):
    from icd.rollout.controller import run_controller
    from icd.rollout.controller_metrics import CanaryRecorder

    clock = [1000.0]
    router = FakeRouter()
    sched = CanaryScheduler(router, FakeProvider([1.0]), tmp_path, clock=lambda: clock[0])
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

    sched = CanaryScheduler(FakeRouter(), FakeProvider([1.0]), tmp_path)
    sched.begin(_spec())
    with (tmp_path / LOCK_FILE).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another controller"):
            run_controller(sched)
