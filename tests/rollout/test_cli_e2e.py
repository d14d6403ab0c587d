"""The guide's scripts as subprocesses on the real stack; the canary controller killed mid-rollout and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from icd.rollout.decision_log import DecisionLog
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.traffic import BackgroundTraffic, TrafficSpec
from icd.rollout.validation import record_golden
from tests.rollout.conftest import REPO

pytestmark = pytest.mark.e2e
PAYLOADS = synthetic_payloads(16, seq_len=16)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _wait_lines(path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} has fewer than {n} lines after {timeout}s")


def test_controller_killed_mid_canary_resumes_without_lost_decisions(echo_triton, tmp_path, free_port):
    state = tmp_path / "state"
    port, exporter_port = free_port(), free_port()
    up = _run("-m", "icd.cli.main", "router", "up", "--port", str(port), "--variant", "bert_baseline=100",
              "--variant", "bert_icd=0", "--upstream", f"blue=127.0.0.1:{echo_triton.http_port}",
              "--exporter-port", str(exporter_port), "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    router = NginxRouter(state / "router")
    try:
        canary = ["scripts/deploy_canary.py", "--model", "bert_icd", "--baseline", "bert_baseline",
                  "--traffic-percentage", "20", "--max-weight", "60", "--monitor-duration", "1s", "--interval", "1.5s",
                  "--threshold", "2", "--alert-threshold", "100", "--min-samples", "10", "--state-dir", str(state)]
        traffic = TrafficSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % 16], concurrency=4,
                              duration_s=120)
        with BackgroundTraffic(traffic) as load:
            first = subprocess.Popen([sys.executable, *canary], cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
            decisions = state / "canary" / "decisions.jsonl"
            _wait_lines(decisions, 2)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = len(DecisionLog(decisions).read())
            resumed = _run(*canary, "--resume", timeout=90)
            records = load.stop()
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        ticks = [d.tick for d in DecisionLog(decisions).read()]
        assert ticks == list(range(1, len(ticks) + 1)) and len(ticks) > killed_at  # no gap, no repeat
        state_json = json.loads((state / "canary" / "canary_state.json").read_text())
        assert state_json["status"]["phase"] == "Succeeded"
        assert router.spec.weights["bert_icd"] == 100
        assert [r for r in records if not r.ok] == []
        status = _run("-m", "icd.cli.main", "canary", "status", "--state-dir", str(state))
        assert status.returncode == 0 and "Succeeded" in status.stdout
        metrics = httpx.get(f"http://127.0.0.1:{exporter_port}/metrics").text  # the router's own series
        assert 'icd_router_requests_total{code="200",colour="blue",variant="bert_icd"}' in metrics
    finally:
        down = _run("-m", "icd.cli.main", "router", "down", "--state-dir", str(state))
    assert down.returncode == 0 and router.master_pid() is None and "exporter" in down.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=1)


def test_ab_validate_and_switch_scripts(echo_triton, tmp_path, free_port, triton_server):
    report = tmp_path / "ab.json"
    ab = _run("scripts/ab_test_framework.py", "--model-a", "ab_a", "--model-b", "ab_a_slow20", "--duration", "3s",
              "--traffic-split", "50:50", "--report", str(report), "--inputs", "synthetic", "--agreement-n", "4",
              "--endpoint", echo_triton.http_url, "--state-dir", str(tmp_path / "s"))
    assert ab.returncode == 0, ab.stderr
    assert "latency (median, Mann-Whitney U)" in ab.stdout and report.with_suffix(".html").exists()
    verdict = json.loads(report.read_text())["comparisons"]["latency_ms"]["verdict"]
    assert verdict in {"worse", "no significant difference"}  # detection itself: test_ab_e2e.py

    golden = tmp_path / "golden.json"
    record_golden(echo_triton.http_url, "bert_icd", PAYLOADS, golden)
    ok = _run("scripts/validate_deployment.py", "--endpoint", echo_triton.http_url, "--model", "bert_icd",
              "--test-duration", "1", "--golden", str(golden))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dead = _run("scripts/validate_deployment.py", "--endpoint", f"http://127.0.0.1:{free_port()}", "--model",
                "bert_icd", "--test-duration", "1", "--golden", str(golden))
    assert dead.returncode == 1 and "FAIL  health" in dead.stdout
    bad = _run("scripts/validate_deployment.py", "--test-duration", "soon", "--golden", str(golden))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--test-duration" in bad.stderr

    state = tmp_path / "bg"
    port = free_port()
    up = _run("-m", "icd.cli.main", "router", "up", "--port", str(port), "--variant", "bert_icd=100",
              "--upstream", f"blue=127.0.0.1:{echo_triton.http_port}", "--upstream",
              f"green=127.0.0.1:{free_port()}", "--exporter-port", "0", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    try:
        refused = _run("scripts/switch_traffic.py", "--from", "blue", "--to", "green", "--validation-time", "2",
                       "--golden", str(golden), "--state-dir", str(state))
        assert refused.returncode == 1 and "refused" in refused.stdout
        assert NginxRouter(state / "router").spec.active == "blue"
    finally:
        _run("-m", "icd.cli.main", "router", "down", "--state-dir", str(state))
