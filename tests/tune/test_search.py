"""The search logic behind its Protocols: concurrency sweep, objectives, brute force and hill climbing."""

from __future__ import annotations

import pytest

from icd.measure.metrics import Measurement
from icd.tune.concurrency import concurrency_sweep
from icd.tune.cost_model import CostModel, InstancePrice
from icd.tune.measurement import THROUGHPUT, ConfigResult, LoadPoint, PointStatus, Slo, latency_tag
from icd.tune.objective import COST, CostBasis, Objective, ObjectiveKind
from icd.tune.space import Candidate, SearchSpace
from icd.tune.strategy import Trial, _neighbours, brute_force, hill_climb, nearest_index
from tests.tune.fakes import SurfaceMeasurer

SLO = Slo(100.0)
CAND = Candidate(1, 1, 8)


def _point(throughput: float, p99: float, concurrency: int = 1, candidate: Candidate = CAND,
           errors: int = 0) -> LoadPoint:
    records = {THROUGHPUT: Measurement(THROUGHPUT, throughput), latency_tag(99): Measurement(latency_tag(99), p99)}
    return LoadPoint(candidate, concurrency, PointStatus.OK, records, requests=100, errors=errors)


def _drive(sweep, answers: dict[int, LoadPoint]) -> list[int]:
    asked = [next(sweep)]
    try:
        while True:
            asked.append(sweep.send(answers[asked[-1]]))
    except StopIteration:
        return asked


def test_sweep_stops_at_slo_and_at_plateau():
    levels = [1, 2, 4, 8, 16]
    up = {1: _point(10, 20), 2: _point(20, 30), 4: _point(40, 60), 8: _point(45, 150), 16: _point(46, 300)}
    assert _drive(concurrency_sweep(levels, SLO), up) == [1, 2, 4, 8]  # 8 breaks the SLO
    flat = {1: _point(10, 20), 2: _point(20, 30), 4: _point(20.5, 40), 8: _point(20.8, 50)}
    assert _drive(concurrency_sweep(levels, SLO), flat) == [1, 2, 4, 8]  # 4 and 8 add < 5 %: two in a row
    noisy = {1: _point(10, 20), 2: _point(20, 30), 4: _point(20.5, 40), 8: _point(30, 50), 16: _point(30.5, 60)}
    assert _drive(concurrency_sweep(levels, SLO), noisy) == [1, 2, 4, 8, 16]  # one short step does not stop it


def test_seeded_sweep_walks_down_when_the_start_breaks_the_slo():
    answers = {4: _point(40, 150), 2: _point(20, 120), 1: _point(10, 50)}
    assert _drive(concurrency_sweep([1, 2, 4, 8], SLO, start=2), answers) == [4, 2, 1]


def test_probe_stops_after_one_point_unless_it_beats_the_incumbent():
    incumbent = _point(40, 60, 4)
    beats = Objective(ObjectiveKind.THROUGHPUT, SLO).beats(incumbent)
    levels = [1, 2, 4, 8, 16]
    worse = {4: _point(30, 50)}
    assert _drive(concurrency_sweep(levels, SLO, 2, beats), worse) == [4]
    too_slow = {4: _point(60, 150)}  # more throughput but breaks the SLO: no walk down when probing
    assert _drive(concurrency_sweep(levels, SLO, 2, beats), too_slow) == [4]
    better = {4: _point(50, 50), 8: _point(70, 80), 16: _point(71, 90)}
    assert _drive(concurrency_sweep(levels, SLO, 2, beats), better) == [4, 8, 16]


def test_a_probe_near_the_incumbent_is_measured_one_level_higher():
    incumbent = _point(40, 60, 4)
    objective = Objective(ObjectiveKind.THROUGHPUT, SLO)
    beats, near = objective.beats(incumbent), objective.beats(incumbent, tolerance=0.1)
    levels = [1, 2, 4, 8, 16]
    close_then_better = {4: _point(38, 50), 8: _point(48, 70), 16: _point(55, 90)}
    assert _drive(concurrency_sweep(levels, SLO, 2, beats, near), close_then_better) == [4, 8, 16]
    close_then_worse = {4: _point(38, 50), 8: _point(39, 70)}
    assert _drive(concurrency_sweep(levels, SLO, 2, beats, near), close_then_worse) == [4, 8]
    far = {4: _point(30, 50)}
    assert _drive(concurrency_sweep(levels, SLO, 2, beats, near), far) == [4]


def test_sweep_ends_on_a_failed_configuration():
    rejected = LoadPoint(CAND, None, PointStatus.REJECTED, detail="no")
    assert _drive(concurrency_sweep([1, 2], SLO), {1: rejected}) == [1]


def test_best_and_closest_and_errors():
    result = ConfigResult(CAND, [_point(10, 50, 1), _point(30, 90, 2), _point(60, 130, 4), _point(70, 80, 8, errors=3)])
    assert result.best(SLO).concurrency == 2  # the errored point never meets the SLO
    tight = Slo(20.0)
    assert result.best(tight) is None and result.closest(tight).concurrency == 1


def test_a_level_measured_twice_is_its_mean_throughput_and_worst_latency():
    result = ConfigResult(CAND, [_point(30, 60, 2), _point(50, 80, 4), _point(40, 95, 4)])
    best = result.best(SLO)
    assert (best.concurrency, best.throughput, best.value(latency_tag(99))) == (4, 45.0, 95.0)
    assert "mean of 2 measurements" in best.records[THROUGHPUT].how and best.requests == 200
    assert result.times_measured(4) == 2 and result.times_measured(2) == 1
    result.points.append(_point(60, 130, 4))  # a third run over the SLO refutes the level
    assert result.best(SLO).concurrency == 2
    result.points.append(LoadPoint(CAND, 2, PointStatus.FAILED, detail="model failed (test)"))
    assert result.best(SLO) is None and result.closest(SLO).concurrency == 4  # a failed repeat refutes its level


def _cost_basis(accelerators: int, vcpus: int | None) -> CostBasis:
    price = InstancePrice(type="x", price_per_hour=36.0, accelerators=accelerators, vcpus=vcpus, region="r",
                          source="https://e", as_of="d")
    return CostBasis(CostModel(name="m", provider="p", currency="USD", instances=[price]), None, price, 0.8, 2)


def test_cost_projection_arithmetic():
    gpu = _cost_basis(1, None)
    # 36 $/h / (100 rps * 0.8 * 3600 s) * 1e6 = 125 $ per million requests; 250 rps needs ceil(250/80) = 4 servers
    assert gpu.per_million(Candidate(2, 1, 8), 100.0) == pytest.approx(125.0)
    assert gpu.servers_for(250.0, 100.0) == 4
    cpu = _cost_basis(0, 8)  # a 2-core configuration occupies 2 of 8 vCPUs: a quarter of the price
    assert cpu.cores(Candidate(2, 1, 8)) == 2 and cpu.cores(Candidate(1, 0, 8)) == 2 and cpu.cores(Candidate(1, 1, 8)) == 1
    assert cpu.per_million(Candidate(2, 1, 8), 100.0) == pytest.approx(125.0 / 4)
    assert cpu.per_million(Candidate(1, 1, 8), 0.0) is None


def test_cost_objective_prefers_fewer_cores_at_equal_throughput():
    objective = Objective(ObjectiveKind.COST, SLO, _cost_basis(0, 8))
    one_core = ConfigResult(Candidate(1, 1, 8), [_point(100, 50, candidate=Candidate(1, 1, 8))])
    two_cores = ConfigResult(Candidate(2, 1, 8), [_point(150, 50, candidate=Candidate(2, 1, 8))])
    assert objective.score(one_core).tag == COST and objective.better(one_core, two_cores)
    assert Objective(ObjectiveKind.THROUGHPUT, SLO).better(two_cores, one_core)
    assert objective.rank([two_cores, one_core]) == [one_core, two_cores]
    missing = ConfigResult(Candidate(1, 2, 8), [_point(500, 500, candidate=Candidate(1, 2, 8))])
    assert not objective.score(missing).measured and objective.rank([missing]) == []
    with pytest.raises(ValueError, match="cost model"):
        Objective(ObjectiveKind.COST, SLO)


def _run_strategy(strategy, space: SearchSpace, slo: Slo) -> tuple[list[ConfigResult], int]:
    objective = Objective(ObjectiveKind.THROUGHPUT, slo)
    measurer = SurfaceMeasurer()
    results = []
    trial = next(strategy)
    while True:
        result = ConfigResult(trial.candidate)
        beats = objective.beats(trial.incumbent) if trial.incumbent is not None else None
        near = objective.beats(trial.incumbent, tolerance=0.1) if trial.incumbent is not None else None
        sweep = concurrency_sweep(space.concurrency, slo, trial.start_level, beats, near)
        level = next(sweep)
        try:
            while True:
                result.points.append(measurer.measure(trial.candidate, level))
                level = sweep.send(result.points[-1])
        except StopIteration:
            pass
        results.append(result)
        try:
            trial = strategy.send(result)
        except StopIteration:
            return results, len(measurer.calls)


def test_hill_climbing_reaches_brute_force_best_with_a_third_of_the_measurements():
    space = SearchSpace(instance_counts=[1, 2, 3, 4], threads=[1, 2], max_batch_sizes=[1, 4, 16, 32],
                        preferred_batch_sizes=[[], "max"], queue_delays_us=[0, 1000, 5000],
                        concurrency=[1, 2, 4, 8, 16, 32, 64])
    objective = Objective(ObjectiveKind.THROUGHPUT, SLO)
    brute, n_brute = _run_strategy(brute_force(space.enumerate()), space, SLO)
    quick, n_quick = _run_strategy(hill_climb(space, objective, Candidate(1, 0, 32, (4, 8), 2000)), space, SLO)
    best_brute = objective.score(objective.rank(brute)[0]).value
    best_quick = objective.score(objective.rank(quick)[0]).value
    assert best_quick >= 0.95 * best_brute
    assert n_quick <= n_brute / 3
    assert len({r.config_id for r in quick}) == len(quick)  # never measures a configuration twice


def test_hill_climb_starts_near_the_current_configuration():
    space = SearchSpace(instance_counts=[1, 2], threads=[1, 2], max_batch_sizes=[1, 8, 32], queue_delays_us=[0, 2000])
    assert nearest_index(space, Candidate(1, 0, 32, (4, 8), 1500)) == (0, 0, 2, 0, 1, 0)
    first = next(hill_climb(space, Objective(ObjectiveKind.THROUGHPUT, SLO), Candidate(1, 0, 32, (), 2000)))
    assert first == Trial(Candidate(1, 1, 32, (), 2000))


def test_neighbours_trade_threads_for_instances():
    near = _neighbours((0, 1, 2, 0, 1, 0), [3, 2, 4, 2, 3, 1])
    assert (1, 0, 2, 0, 1, 0) in near  # one instance more, one thread step fewer
    assert (0, 0, 2, 0, 1, 0) in near and (1, 1, 2, 0, 1, 0) in near  # the single steps stay
    assert not any(n[:2] == (-1, 2) for n in near)
    assert (0, 1, 2, 0, 1, 0) not in near


def test_hill_climbing_crosses_to_more_instances_of_fewer_threads(monkeypatch):
    """From one instance of 2 threads on 2 cores, both single steps are worse (2 x 2 oversubscribes, 1 x 1 idles a
    core); two instances of one thread are better: the climb must get there, as brute force does."""
    import tests.tune.fakes as fakes

    plain = fakes.surface

    def instances_pay(candidate, concurrency):
        throughput, p99 = plain(candidate, concurrency)
        return throughput * (1.0 + 0.15 * (candidate.instance_count - 1)), p99

    monkeypatch.setattr(fakes, "surface", instances_pay)
    space = SearchSpace(instance_counts=[1, 2, 3], threads=[1, 2], max_batch_sizes=[8, 32],
                        queue_delays_us=[0, 2000], concurrency=[1, 2, 4, 8, 16, 32])
    objective = Objective(ObjectiveKind.THROUGHPUT, SLO)
    brute, _ = _run_strategy(brute_force(space.enumerate()), space, SLO)
    quick, _ = _run_strategy(hill_climb(space, objective, Candidate(1, 2, 32, (), 2000)), space, SLO)
    best_brute, best_quick = objective.rank(brute)[0], objective.rank(quick)[0]
    assert best_brute.candidate.instance_count == 2 and best_brute.candidate.threads == 1
    assert best_quick.candidate == best_brute.candidate
