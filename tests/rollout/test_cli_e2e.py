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

from icd.cli.main import main
from icd.rollout.decision_log import DecisionLog
from icd.rollout.payloads import synthetic_payloads
from icd.rollout.router_nginx import NginxRouter
from icd.load.routed import BackgroundRouted, RoutedSpec
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
        traffic = RoutedSpec(f"{router.url}/v2/models/bert/infer", lambda i: PAYLOADS[i % 16], concurrency=4,
                              duration_s=120)
        with BackgroundRouted(traffic) as load:
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


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (the scripts are three-line wrappers of it): exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ab_validate_and_switch_scripts(echo_triton, tmp_path, free_port, capsys):
    report = tmp_path / "ab.json"
    ab = _run("scripts/ab_test_framework.py", "--model-a", "ab_a", "--model-b", "ab_a_slow20", "--duration", "3s",
              "--traffic-split", "50:50", "--report", str(report), "--inputs", "synthetic", "--agreement-n", "4",
              "--endpoint", echo_triton.http_url, "--state-dir", str(tmp_path / "s"))
    assert ab.returncode == 3, ab.stdout + ab.stderr  # 3 s is too little traffic for the blocked test: no verdict
    assert "latency  inconclusive: too little traffic" in ab.stdout and report.with_suffix(".html").exists()
    assert json.loads(report.read_text())["conclusive"] is False
    code, _, err = _cli(capsys, "ab", "--model-a", "bert_base", "--model-b", "bert_icd", "--duration", "3s",
                        "--inputs", "synthetic", "--endpoint", echo_triton.http_url, "--report",
                        str(tmp_path / "typo.json"), "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "'bert_base' is not READY" in err and "bert_baseline READY" in err
    assert not (tmp_path / "typo.json").exists()

    golden = tmp_path / "golden.json"
    record_golden(echo_triton.http_url, "bert_icd", PAYLOADS, golden)
    ok = _run("scripts/validate_deployment.py", "--endpoint", echo_triton.http_url, "--model", "bert_icd",
              "--test-duration", "1", "--golden", str(golden))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "argmax 1.000" in ok.stdout  # agreement in the figures of the task (echo_delay: logits)
    code, out, _ = _cli(capsys, "validate", "--endpoint", f"http://127.0.0.1:{free_port()}", "--model", "bert_icd",
                        "--test-duration", "1", "--golden", str(golden))
    assert code == 1 and "FAIL  health" in out
    code, _, err = _cli(capsys, "validate", "--test-duration", "soon", "--golden", str(golden))
    assert code == 2 and "--test-duration" in err

    state = tmp_path / "bg"
    addr = f"127.0.0.1:{echo_triton.http_port}"
    code, _, err = _cli(capsys, "router", "up", "--port", str(free_port()), "--variant", "bert_icd=100",
                        "--variant", "bert_baseline=0", "--upstream",
                        f"blue={addr}", "--upstream", f"green=127.0.0.1:{free_port()}", "--upstream", f"teal={addr}",
                        "--exporter-port", "0", "--state-dir", str(state))
    assert code == 0, err
    try:
        code, _, err = _cli(capsys, "router", "set", "--variant", "bert_icd=50,bert_icdd=50", "--state-dir", str(state))
        assert code == 2 and "'bert_icdd' is not READY" in err and "bert_baseline READY" in err
        assert NginxRouter(state / "router").spec.weights == {"bert_icd": 100, "bert_baseline": 0}  # unchanged
        code, out, err = _cli(capsys, "router", "set", "--variant", "bert_icd=100,bert_baseline=0", "--state-dir",
                              str(state))
        assert code == 0 and "generation" in out, err  # nothing gains traffic: no check, no change
        refused = _run("scripts/switch_traffic.py", "--from", "blue", "--to", "green", "--validation-time", "2",
                       "--golden", str(golden), "--state-dir", str(state))
        assert refused.returncode == 1 and "refused" in refused.stdout
        assert NginxRouter(state / "router").spec.active == "blue"
        code, _, err = _cli(capsys, "switch", "--from", "blue", "--to", "teal", "--model", "bert_icdd", "--state-dir",
                            str(state))
        assert code == 2 and "'bert_icdd' is not READY" in err
        unjudged = _run("scripts/switch_traffic.py", "--from", "blue", "--to", "teal", "--validation-time", "2",
                        "--watch-interval", "1", "--precheck-duration", "1", "--golden", str(golden),
                        "--state-dir", str(state))  # a healthy target, but no client sends traffic
        assert unjudged.returncode == 3, unjudged.stdout + unjudged.stderr
        assert "inconclusive" in unjudged.stdout and "none is generated here" in unjudged.stdout
        assert NginxRouter(state / "router").spec.active == "blue"  # never left switched on 0 judged requests
        code, out, _ = _cli(capsys, "canary", "monitor", "--baseline", "bert_icd", "--canary", "bert_baseline",
                            "--interval", "1s", "--state-dir", str(state))
        assert code == 3 and "inconclusive" in out and "this command sends none" in out
        code, _, err = _cli(capsys, "canary", "monitor", "--baseline", "bert_icd", "--canary", "bert_icdd",
                            "--state-dir", str(state))
        assert code == 2 and "'bert_icdd': not a variant of the router" in err
    finally:
        _cli(capsys, "router", "down", "--state-dir", str(state))


def test_deploy_canary_generates_its_own_traffic_with_the_load_test_webhook(echo_triton, tmp_path, free_port,
                                                                            capsys):
    state = tmp_path / "state"
    code, _, err = _cli(capsys, "canary", "deploy", "--model", "bert_icdd", "--endpoint", echo_triton.http_url,
                        "--router-port", str(free_port()), "--state-dir", str(state))
    assert code == 2 and "'bert_icdd' is not READY" in err and not (state / "router").exists()  # nothing started
    try:
        out = _run("scripts/deploy_canary.py", "--model", "bert_icd", "--baseline", "bert_baseline",
                   "--traffic-percentage", "25", "--max-weight", "50", "--monitor-duration", "1s", "--interval", "1.5s",
                   "--alert-threshold", "100", "--min-samples", "5", "--load-rate", "40", "--load-inputs", "synthetic",
                   "--endpoint", echo_triton.http_url, "--router-port", str(free_port()), "--state-dir", str(state))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "generated here by the load-test webhook: 40 req/s" in out.stdout and "Succeeded: promoted" in out.stdout
        log = (state / "router" / "access.jsonl").read_text().splitlines()
        variants = {json.loads(line)["variant"] for line in log}
        assert variants == {"bert_baseline", "bert_icd"}
    finally:
        _run("-m", "icd.cli.main", "router", "down", "--state-dir", str(state))
