"""End to end against the real embedded Triton server: both loop modes, HTTP and gRPC, all four traffic patterns
(on the synthetic python-backend ``echo_delay`` model), and a short load on the real exported MiniLM ``bert_icd``."""

from __future__ import annotations

import json

import pytest

from icd.cli.main import main
from icd.load import LoadSettings, Target, run_load
from icd.serve.synthetic_model import SYNTHETIC_MODEL_NAME
from tests.load.stress import assert_stress_consistent

pytestmark = pytest.mark.e2e

FAST = dict(inputs="random", input_shape=32, workers=1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("mode", ["closed", "open"])
def test_both_modes_both_protocols(triton_small_server, protocol, mode):
    endpoint = triton_small_server.http_url if protocol == "http" else triton_small_server.grpc_url
    load = dict(concurrency=4) if mode == "closed" else dict(rate=40.0, arrival="poisson")
    report = run_load(LoadSettings(duration_s=3.0, protocol=protocol, **load, **FAST),
                      Target(endpoint, [SYNTHETIC_MODEL_NAME])).to_dict()
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["requests"] > 0
    assert report["latency_ms"]["min"] >= 5.0  # the model sleeps 5 ms per batch
    assert report["mode"] == mode and report["settings"]["protocol"] == protocol
    if mode == "open":
        assert report["throughput_rps"] <= 1.4 * 40  # never above the arrivals (a loaded CPU sends fewer)


@pytest.mark.parametrize("pattern", ["constant", "bursty", "realistic", "stress"])
def test_all_patterns_on_triton(triton_small_server, tmp_path, capsys, pattern):
    report = tmp_path / "production_sim.json"
    rc = main(["simulate", "--endpoint", triton_small_server.http_url, "--models", SYNTHETIC_MODEL_NAME,
               "--traffic-pattern", pattern, "--duration", "4", "--rate", "20", "--step", "1", "--slo-p95-ms", "200",
               "--report", str(report), "--inputs", "random", "--input-shape", "32", "--workers", "1", "--no-progress"])
    assert rc == 0
    data = json.loads(report.read_text())
    model = data["models"][SYNTHETIC_MODEL_NAME]
    assert model["errors"]["total"] == 0 and model["requests"] > 0
    assert len(model["timeseries"]) >= 3
    assert report.with_suffix(".html").is_file()
    if pattern == "stress":
        assert_stress_consistent(data["stress"][SYNTHETIC_MODEL_NAME], start_rate=20.0)


def test_unknown_model_on_triton_is_reported_before_load(triton_small_server, capsys):
    rc = main(["bench", triton_small_server.http_url, "no_such_model", "--duration", "1", "--inputs", "random",
               "--no-progress"])
    assert rc == 2 and "not ready" in capsys.readouterr().err


@pytest.mark.slow
def test_real_minilm_bert_models_with_real_text(triton_server, triton_repo_bert, tmp_path, capsys):
    server = triton_server(triton_repo_bert, timeout_s=240.0)
    report = tmp_path / "load_test_single.json"
    rc = main(["bench", server.http_url, "bert_icd,bert_baseline", "--batch-size", "1", "--duration", "4",
               "--input-shape", "128", "--concurrency", "2", "--report", str(report), "--workers", "1",
               "--no-progress", "--timeout", "60"])
    assert rc == 0
    data = json.loads(report.read_text())
    assert data["errors"]["total"] == 0 and data["settings"]["inputs"] == "text"
    for name in ("bert_icd", "bert_baseline"):
        assert data["models"][name]["requests"] >= 1


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_server_killed_mid_run_fails_the_bench_and_says_so(triton_server, triton_repo_small, tmp_path, protocol):
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    server = triton_server(triton_repo_small)
    endpoint = server.http_url if protocol == "http" else server.grpc_url
    report = tmp_path / "load_test_single.json"
    bench = subprocess.Popen([sys.executable, "-m", "icd.cli.main", "bench", endpoint, SYNTHETIC_MODEL_NAME,
                              "--duration", "8", "--concurrency", "2", "--protocol", protocol, "--inputs", "random",
                              "--input-shape", "32", "--workers", "1", "--no-progress", "--report", str(report)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stats = f"{server.http_url}/v2/models/{SYNTHETIC_MODEL_NAME}/stats"
    try:
        deadline = time.monotonic() + 120  # a bound for a loaded machine, not a timing assertion
        while httpx.get(stats, trust_env=False).json()["model_stats"][0]["inference_count"] == 0:
            assert bench.poll() is None and time.monotonic() < deadline, bench.communicate()
            time.sleep(0.1)
        os.kill(server.pid, signal.SIGKILL)  # the load is running: the server dies under it
        _, stderr = bench.communicate(timeout=240)
    finally:
        bench.kill()
    assert bench.returncode == 1, stderr
    assert f"icd: error: endpoint {endpoint}: {SYNTHETIC_MODEL_NAME} stopped answering" in stderr
    assert "Traceback" not in stderr
    data = json.loads(report.read_text())
    assert data["problems"] and "stopped answering" in data["problems"][0]
    assert data["requests_ok"] > 0
    # clients back off after a refused connection (50 ms doubling to 1 s): a handful per client, not thousands
    assert data["errors"]["total"] < 200, data["errors"]
