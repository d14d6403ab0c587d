"""Blue-green on the real stack: two Triton servers (synthetic echo_delay ``bert_icd``) behind the real router."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from icd.rollout.bluegreen import SwitchOutcome, SwitchSpec, switch_traffic
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.traffic import BackgroundTraffic, TrafficSpec
from icd.rollout.validation import ValidationSpec, record_golden, validate_deployment

pytestmark = pytest.mark.e2e

PAYLOADS = synthetic_payloads(16, seq_len=16)


@pytest.fixture
def blue_green(tmp_path, triton_server, nginx_router):
    from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model

    repo = tmp_path / "repo"
    write_echo_delay_model(repo, EchoDelaySpec(name="bert_icd", delay_ms=2.0))
    blue, green = triton_server(repo), triton_server(repo)
    router = nginx_router({"bert_icd": 100}, {"blue": [f"127.0.0.1:{blue.http_port}"],
                                              "green": [f"127.0.0.1:{green.http_port}"]}, public="bert")
    golden = tmp_path / "golden.json"
    record_golden(blue.http_url, "bert_icd", PAYLOADS, golden)  # synthetic inputs, recorded from blue
    return blue, green, router, golden


def _load(router) -> BackgroundTraffic:
    return BackgroundTraffic(TrafficSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % 16],
                                         concurrency=4, duration_s=120))


def _kill(server) -> None:
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


def test_validate_passes_on_a_good_deployment_and_fails_on_a_dead_one(blue_green):
    blue, green, _, golden = blue_green
    report = validate_deployment(ValidationSpec(green.http_url, "bert_icd", test_duration_s=1.0, golden_file=golden))
    assert report.passed, report.to_dict()
    assert [c.name for c in report.checks] == ["health", "readiness", "metadata", "golden outputs", "latency SLO"]
    missing = validate_deployment(ValidationSpec(green.http_url, "no_such_model", test_duration_s=0.5,
                                                 golden_file=golden))
    assert not missing.passed and missing.checks[-1].name == "readiness"


def test_full_switch_under_load_drops_no_request(blue_green, tmp_path):
    _, _, router, golden = blue_green
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=3, precheck_duration_s=1, watch_interval_s=1,
                      golden_file=golden)
    with _load(router) as load:
        result = switch_traffic(router, spec, log_path=tmp_path / "switch.jsonl")
    records = load.stop()
    assert result.outcome is SwitchOutcome.SWITCHED, result.reason
    assert router.spec.active == "green"
    assert [r for r in records if not r.ok] == [] and len(records) > 100
    assert (tmp_path / "switch.jsonl").read_text().count('"event": "watch"') >= 2


def test_green_killed_during_validation_refuses_switch_and_blue_keeps_serving(blue_green):
    _, green, router, golden = blue_green
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=3, precheck_duration_s=3, golden_file=golden)
    killer = threading.Timer(1.0, _kill, args=(green,))
    with _load(router) as load:
        killer.start()
        result = switch_traffic(router, spec)
        killer.join()
        time.sleep(0.5)
    records = load.stop()
    assert result.outcome is SwitchOutcome.REFUSED, result.reason
    assert router.spec.active == "blue" and router.spec.generation == 0
    assert [r for r in records if not r.ok] == [] and len(records) > 50


def test_green_killed_while_watched_switches_back_without_failed_requests(blue_green):
    _, green, router, golden = blue_green
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=6, precheck_duration_s=1, watch_interval_s=0.5,
                      golden_file=golden)
    with _load(router) as load:
        killer = threading.Timer(3.0, _kill, args=(green,))
        killer.start()
        result = switch_traffic(router, spec)
        killer.join()
        time.sleep(0.5)
    records = load.stop()
    assert result.outcome is SwitchOutcome.ROLLED_BACK, result.reason
    assert router.spec.active == "blue"
    assert [r for r in records if not r.ok] == [], [r for r in records if not r.ok][:3]
