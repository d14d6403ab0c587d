"""The coordinator with a fake server and measurer: checkpoint, resume, reports, bad input. (Real Triton: e2e.)"""

from __future__ import annotations

import json

import pytest

from icd.errors import ConfigError, UserError
from icd.export.config_pbtxt import read_config
from icd.tune.checkpoint import Checkpoint
from icd.tune.measurement import Slo
from icd.tune.run import render_checkpoint, run_tune
from icd.tune.settings import TuneSettings
from icd.tune.space import SearchSpace
from icd.tune.strategy import SearchMode
from tests.tune.fakes import FakeServer, SurfaceMeasurer

SPACE = SearchSpace(instance_counts=[1, 2], threads=[1, 2], max_batch_sizes=[1, 8, 32], queue_delays_us=[0, 1000],
                    concurrency=[1, 2, 4, 8, 16])


def _settings(tmp_path, **kw) -> TuneSettings:
    kw.setdefault("space", SPACE)
    return TuneSettings(model="echo_delay", slo=kw.pop("slo", Slo(100.0)), report=tmp_path / "out" / "tune.json",
                        progress=False, **kw)


def test_complete_run_writes_every_file_and_restores_the_base(tmp_path):
    server = FakeServer()
    doc = run_tune(_settings(tmp_path), server=server, measurer=SurfaceMeasurer())
    out = tmp_path / "out"
    assert doc["status"] == "complete" and doc["recommendation"] is not None
    assert json.loads((out / "tune.json").read_text()) == json.loads(json.dumps(doc))
    winner = doc["recommendation"]
    config = read_config(out / "tune.config.pbtxt")  # Triton's own ModelConfig parses it
    assert config.max_batch_size == winner["max_batch_size"]
    assert config.instance_group[0].count == winner["instance_count"]
    assert config.parameters["icd_threads"].string_value == str(winner["threads"])
    assert config.parameters["icd_delay_ms"].string_value == "5.0"  # the rest of the base is kept
    html = (out / "tune.html").read_text()
    assert "data:image/png;base64" in html and winner["config_id"] in html
    assert (out / "tune.png").stat().st_size > 1000
    assert server.closed_with == [server.base]
    assert winner["config_id"] in doc["pareto_front"]
    assert doc["measurements"] == Checkpoint.read(out / "tune.checkpoint.json").measured


def test_interrupted_run_resumes_without_measuring_twice(tmp_path):
    whole = SurfaceMeasurer()
    reference = run_tune(_settings(tmp_path / "ref"), server=FakeServer(), measurer=whole)
    first = SurfaceMeasurer(interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_tune(_settings(tmp_path), server=FakeServer(), measurer=first)
    stopped = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert stopped["status"] == "interrupted" and "rerun the same command" in stopped["stop_reason"]
    assert stopped["measurements"] == 5
    rest = SurfaceMeasurer()
    doc = run_tune(_settings(tmp_path), server=FakeServer(), measurer=rest)
    assert sorted(first.calls + rest.calls) == sorted(whole.calls)  # nothing measured twice but the winner's repeat
    assert doc["status"] == "complete" and doc["recommendation"] == reference["recommendation"]


def test_the_winner_is_re_measured_and_a_repeat_over_the_slo_refutes_its_level(tmp_path):
    held = SurfaceMeasurer()
    doc = run_tune(_settings(tmp_path / "held"), server=FakeServer(), measurer=held)
    winner = doc["recommendation"]
    assert held.calls.count((winner["config_id"], winner["concurrency"])) == 2  # confirmed by a repeat
    assert len(set(held.calls)) == len(held.calls) - 1 and doc["measurements"] == len(held.calls)
    assert "held the SLO on a repeat measurement (of 2: throughput the mean, latency the worst)" in doc["verdict"]
    assert winner["measurements_at_level"] == 2

    refuted = SurfaceMeasurer(repeat_p99_factor=100.0)  # every repeat breaks the SLO
    again = run_tune(_settings(tmp_path / "refuted"), server=FakeServer(), measurer=refuted)
    repeats = [call for call in set(refuted.calls) if refuted.calls.count(call) > 1]
    assert len(repeats) == 3 and again["measurements"] == len(refuted.calls)  # CONFIRMATIONS, then it stops
    assert (winner["config_id"], winner["concurrency"]) in repeats
    assert (again["recommendation"]["config_id"], again["recommendation"]["concurrency"]) not in repeats
    assert again["recommendation"]["measurements_at_level"] == 1
    assert "held the SLO on a repeat" not in again["verdict"]
    resumed = SurfaceMeasurer()
    assert run_tune(_settings(tmp_path / "refuted"), server=FakeServer(), measurer=resumed)["recommendation"] == \
        again["recommendation"] and resumed.calls == []  # a complete checkpoint measures nothing more


def test_a_search_that_cannot_go_on_stops_cleanly_with_its_reports(tmp_path):
    server = FakeServer()
    doc = run_tune(_settings(tmp_path), server=server, measurer=SurfaceMeasurer(stop_after=3))
    assert doc["status"] == "stopped" and "could not be restarted (fake); rerun the same command" in doc["stop_reason"]
    assert doc["measurements"] == 3 and (tmp_path / "out" / "tune.html").is_file()
    assert server.closed_with == [server.base]  # the server is still closed (restored)


def test_checkpoint_of_other_settings_is_refused_unless_fresh(tmp_path):
    run_tune(_settings(tmp_path), server=FakeServer(), measurer=SurfaceMeasurer())
    with pytest.raises(UserError, match=r"slo.latency_ms: 100.0 -> 50.0.*--fresh"):
        run_tune(_settings(tmp_path, slo=Slo(50.0)), server=FakeServer(), measurer=SurfaceMeasurer())
    again = SurfaceMeasurer()
    doc = run_tune(_settings(tmp_path, slo=Slo(50.0), fresh=True), server=FakeServer(), measurer=again)
    assert again.calls and doc["slo"]["latency_ms"] == 50.0


def test_slo_nobody_meets_says_so_and_names_the_closest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tune.config.pbtxt").write_text("stale winner of an earlier run")
    doc = run_tune(_settings(tmp_path, slo=Slo(5.0)), server=FakeServer(), measurer=SurfaceMeasurer())
    assert doc["recommendation"] is None and doc["status"] == "complete"
    assert doc["verdict"].startswith("no configuration meets p99 <= 5 ms") and "closest: " in doc["verdict"]
    assert doc["closest"]["served_latency_p99_ms"] == min(r["p99_ms"] for r in doc["candidates"])
    assert not (out / "tune.config.pbtxt").exists() and doc["files"]["config"] is None


def test_rejected_configurations_are_recorded_and_the_search_goes_on(tmp_path):
    measurer = SurfaceMeasurer(rejected={"i1_t1_b8_d0", "i1_t1_b1"})
    doc = run_tune(_settings(tmp_path, mode=SearchMode.BRUTE), server=FakeServer(), measurer=measurer)
    rows = {r["config_id"]: r for r in doc["candidates"]}
    assert rows["i1_t1_b8_d0"]["status"] == "rejected" and "refused" in rows["i1_t1_b8_d0"]["detail"]
    assert len(rows) == len(SPACE.enumerate().candidates) and doc["recommendation"] is not None


def test_bad_input_is_refused_before_any_server_or_file(tmp_path):
    server = FakeServer()
    impossible = SearchSpace(max_batch_sizes=[4], preferred_batch_sizes=[[8]])
    with pytest.raises(ConfigError, match="no possible configuration"):
        run_tune(_settings(tmp_path, space=impossible), server=server, measurer=SurfaceMeasurer())
    with pytest.raises(ConfigError, match="azure-nd"):
        run_tune(_settings(tmp_path, cost_model="azure-nd"), server=server, measurer=SurfaceMeasurer())
    with pytest.raises(UserError, match="--report"):
        run_tune(TuneSettings(report=tmp_path / "tune.txt", progress=False), server=server)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a directory"):
        run_tune(TuneSettings(report=tmp_path / "file" / "tune.json", progress=False), server=server)
    assert server.closed_with == [] and not (tmp_path / "out").exists()


def test_cost_objective_and_offline_rerender(tmp_path):
    settings = _settings(tmp_path, cost_model="cpu", objective="cost", demand_rps=1000.0)
    doc = run_tune(settings, server=FakeServer(), measurer=SurfaceMeasurer())
    assert doc["objective_tag"] == "projected_cost_per_million_requests"
    assert "projection" in doc["cost_basis"]["how"] and doc["cost_basis"]["instance"]["vcpus"] == 8
    winner = doc["recommendation"]
    costs = [r["projected_cost_per_million_requests"] for r in doc["candidates"] if r["status"] == "meets_slo"]
    assert winner["projected_cost_per_million_requests"] == min(costs) and winner["servers_for_demand"] >= 1
    (tmp_path / "out" / "tune.html").unlink()
    again = render_checkpoint(tmp_path / "out" / "tune.checkpoint.json")
    assert again["recommendation"]["config_id"] == winner["config_id"] and (tmp_path / "out" / "tune.html").is_file()
