"""``icd bench`` / ``icd simulate`` (and the guide's scripts) against the synthetic injected-latency server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from icd.cli.main import main
from tests.load.stress import assert_stress_consistent

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FAST = ["--inputs", "random", "--workers", "1", "--no-progress"]


def _summary(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_guide_benchmark_command_real_text(shared_server, tmp_path, capsys):
    report = tmp_path / "results" / "load_test_single.json"
    rc = main(["bench", shared_server.url, "bert_icd", "--batch-size", "1", "--duration", "3", "--input-shape", "128",
               "--report", str(report), "--no-progress"])
    assert rc == 0
    data = json.loads(report.read_text())
    for key in ("requests", "duration_s", "throughput_rps"):
        assert data[key] > 0
    assert {"mean", "p50", "p90", "p95", "p99", "p99.9", "max"} <= set(data["latency_ms"])
    assert data["settings"]["inputs"] == "text" and data["settings"]["input_shape"] == 128
    assert data["mode"] == "closed" and data["errors"]["total"] == 0
    assert _summary(capsys)["requests"] == data["requests"]


def test_open_loop_flags_env_and_config(shared_server, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "load.yaml"
    cfg.write_text("rate: 40\narrival: poisson\nduration: 2s\n")
    monkeypatch.setenv("ICD_LOAD_WARMUP", "1")
    report = tmp_path / "r.json"
    rc = main(["bench", shared_server.url, "bert_icd,bert_baseline", "--config", str(cfg), "--rate", "30",
               "--report", str(report), *FAST])
    assert rc == 0
    data = json.loads(report.read_text())
    assert data["mode"] == "open" and data["late_sends"] is not None
    settings = data["settings"]  # flag (30/s) beat the config (40/s); env warm-up; config duration and arrival
    assert (settings["rate"], settings["warmup_s"], settings["duration_s"], settings["arrival"]) == (30, 1, 2, "poisson")
    assert 0 < data["requests"] <= 2 * 30 * 2 * 1.5  # 2 models, 30/s, 2 s (Poisson): a loaded CPU sends fewer


@pytest.mark.parametrize("pattern", ["constant", "bursty", "realistic", "stress"])
def test_simulate_patterns_write_json_and_html(shared_server, tmp_path, capsys, pattern):
    report = tmp_path / "production_sim.json"
    rc = main(["simulate", "--endpoint", shared_server.url, "--models", "bert_icd,bert_baseline", "--traffic-pattern",
               pattern, "--duration", "4", "--rate", "20", "--report", str(report), "--step", "1", *FAST])
    assert rc == 0
    data = json.loads(report.read_text())
    assert data["traffic_pattern"] == pattern
    for name in ("bert_icd", "bert_baseline"):
        series = data["models"][name]["timeseries"]
        assert len(series) >= 3
        assert {"t_s", "sent_rps", "ok_rps", "error_rps", "p50_ms", "p95_ms", "p99_ms", "target_rate"} <= set(series[0])
    html = report.with_suffix(".html").read_text()
    assert "<img" in html and "Latency" in html
    if pattern == "stress":
        assert_stress_consistent(data["stress"]["bert_icd"], start_rate=20.0)


def test_bad_pattern_name_keeps_existing_report(shared_server, tmp_path, capsys):
    report = tmp_path / "sim.json"
    report.write_text('{"previous": true}')
    rc = main(["simulate", "--endpoint", shared_server.url, "--models", "bert_icd", "--traffic-pattern", "spiky",
               "--report", str(report), *FAST])
    assert rc == 2
    assert "--traffic-pattern 'spiky'" in capsys.readouterr().err
    assert report.read_text() == '{"previous": true}'


def test_bad_shape_is_reported_before_load_and_keeps_report(shared_server, tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text("old")
    rc = main(["bench", shared_server.url, "bert_icd", "--input-shape", "64", "--duration", "2", "--report",
               str(report), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "bad shape" in err and "[-1, 128]" in err and "Traceback" not in err
    assert report.read_text() == "old"


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_unwritable_report_path_fails_before_load(shared_server, tmp_path, capsys, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "r.json" if where == "under_a_file" else tmp_path
    t0 = time.monotonic()
    rc = main(["bench", shared_server.url, "bert_icd", "--duration", "30", "--report", str(path), *FAST])
    assert rc == 2 and "--report" in capsys.readouterr().err
    assert time.monotonic() - t0 < 30  # refused before the 30 s of load, not after
    assert blocker.read_text() == "x"


def test_unreachable_endpoint_and_missing_model(shared_server, free_port, capsys):
    assert main(["bench", f"http://127.0.0.1:{free_port()}", "bert_icd", "--duration", "1", *FAST]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert main(["bench", shared_server.url, "nope", "--duration", "1", *FAST]) == 2
    assert "not ready" in capsys.readouterr().err


def _requests_sent(metrics_url: str) -> float:
    """The generator's own ``icd_load_requests_total`` (0 until its exporter answers)."""
    try:
        text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("icd_load_requests_total{"))


def test_ctrl_c_writes_partial_report(shared_server, tmp_path, free_port):
    report = tmp_path / "partial.json"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "production_benchmark.py"), shared_server.url, "bert_icd",
         "--rate", "50", "--duration", "60", "--report", str(report), "--metrics-port", str(port), *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        # interrupt once requests flow (not after a fixed sleep: a loaded machine may still be importing)
        deadline = time.monotonic() + 120.0
        while _requests_sent(f"http://127.0.0.1:{port}/metrics") == 0 and proc.poll() is None:
            assert time.monotonic() < deadline, "the load generator sent nothing within 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and data["requests"] > 0 and data["duration_s"] < 60
