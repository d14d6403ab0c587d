"""Blue-green on the real stack: two Triton servers (synthetic echo_delay ``bert_icd``) behind the real router."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from icd.rollout.bluegreen import SwitchOutcome, SwitchSpec, switch_traffic
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.payloads import synthetic_payloads
from icd.load.routed import BackgroundRouted, RoutedSpec
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


def _load(router) -> BackgroundRouted:
    return BackgroundRouted(RoutedSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % 16],
                                         concurrency=4, duration_s=120))


def _kill(server) -> None:
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


def test_validate_then_full_switch_under_load_drops_no_request(blue_green, tmp_path):
    blue, green, router, golden = blue_green
    report = validate_deployment(ValidationSpec(green.http_url, "bert_icd", test_duration_s=1.0, golden_file=golden))
    assert report.passed, report.to_dict()
    assert [c.name for c in report.checks] == ["health", "readiness", "metadata", "golden outputs", "latency SLO"]
    assert "argmax" in report.checks[3].detail  # echo_delay answers logits: classifier agreement
    missing = validate_deployment(ValidationSpec(green.http_url, "no_such_model", test_duration_s=0.5,
                                                 golden_file=golden))
    assert not missing.passed and missing.checks[-1].name == "readiness"
    assert "no_such_model: not in the model repository; served: bert_icd READY" in missing.checks[-1].detail
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=3, precheck_duration_s=1, watch_interval_s=1,
                      golden_file=golden)
    with _load(router) as load:
        result = switch_traffic(router, spec, tmp_path / "bg")
    records = load.stop()
    assert result.outcome is SwitchOutcome.SWITCHED, result.reason
    assert router.spec.active == "green"
    assert [r for r in records if not r.ok] == [] and len(records) > 100
    actions = [d["action"] for d in result.decisions]
    assert actions[0] == "start" and actions[-1] == "finalise" and actions.count("hold") + 1 >= 3
    judged = [c for d in result.decisions if d["analysis"] for c in d["analysis"]["checks"]
              if c["name"] == "error-rate"]
    assert judged and all(c["verdict"] == "pass" for c in judged)  # judged on requests routed to green


def test_green_killed_during_validation_refuses_switch_and_blue_keeps_serving(blue_green, tmp_path):
    _, green, router, golden = blue_green
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=3, precheck_duration_s=3, golden_file=golden)
    killer = threading.Timer(1.0, _kill, args=(green,))
    with _load(router) as load:
        killer.start()
        result = switch_traffic(router, spec, tmp_path / "bg")
        killer.join()
        time.sleep(0.5)
    records = load.stop()
    assert result.outcome is SwitchOutcome.REFUSED, result.reason
    assert router.spec.active == "blue" and router.spec.generation == 0  # the router was never touched
    assert [r for r in records if not r.ok] == [] and len(records) > 50


def test_green_killed_while_watched_switches_back_without_failed_requests(blue_green, tmp_path):
    _, green, router, golden = blue_green
    spec = SwitchSpec("blue", "green", "bert_icd", validation_time_s=6, precheck_duration_s=1, watch_interval_s=0.5,
                      golden_file=golden)
    def kill_once_switched() -> None:  # by event, not by a timer: validation may take any time on a loaded host
        while NginxRouter(router.workdir).spec.active != "green":
            time.sleep(0.05)
        _kill(green)

    with _load(router) as load:
        killer = threading.Thread(target=kill_once_switched, daemon=True)
        killer.start()
        result = switch_traffic(router, spec, tmp_path / "bg")
        killer.join(timeout=30)
        time.sleep(0.5)
    records = load.stop()
    assert result.outcome is SwitchOutcome.ROLLED_BACK, result.reason
    assert router.spec.active == "blue" and "webhook ready" in result.reason
    assert [r for r in records if not r.ok] == [], [r for r in records if not r.ok][:3]
