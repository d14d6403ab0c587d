from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from icd.errors import ArtefactError
from icd.ops.traces import breakdown, parse_traces
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from tests.ops.helpers import REPO_ROOT, run_script

_STAMPS = ["HTTP_RECV_START", "HTTP_RECV_END", "REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END",
           "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END", "HTTP_SEND_START", "HTTP_SEND_END"]


def _entries(trace_id: int, offsets_us: list[int]) -> list[dict]:
    out = [{"id": trace_id, "model_name": "m", "model_version": 1}]
    out += [{"id": trace_id, "timestamps": [{"name": n, "ns": 1_000_000 + us * 1000}]} for n, us in zip(_STAMPS, offsets_us)]
    return out


def test_phases_from_triton_timestamps():
    # recv 0-10, request 20, queue 30, compute 1030 (queue 1000 us), input end 1040, output start 5040
    entries = _entries(1, [0, 10, 20, 30, 1030, 1040, 5040, 5060, 5070, 5080, 5100])
    entries += [{"id": 2, "timestamps": [{"name": "QUEUE_START", "ns": 5}]}]  # incomplete
    requests, incomplete = parse_traces(entries)
    assert incomplete == 1 and len(requests) == 1
    phases = requests[0].phases_ms
    assert phases["queue"] == pytest.approx(1.0) and phases["compute_infer"] == pytest.approx(4.0)
    assert requests[0].total_ms == pytest.approx(5.1)
    result = breakdown(requests, client_mean_ms=7.1)
    assert result["bottleneck"] == "compute_infer"
    assert result["phases"]["network_client"]["mean_ms"] == pytest.approx(2.0)


def test_no_complete_trace_is_an_error():
    with pytest.raises(ArtefactError):
        breakdown([], None)


def _traced_server(tmp_path, triton_server, **kwargs):
    """A real Triton started with a trace file, serving the synthetic echo_delay model (20 ms per batch)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    write_echo_delay_model(repo, EchoDelaySpec(delay_ms=20.0, max_queue_delay_us=0))
    trace_file = tmp_path / "server" / "trace.json"
    trace_file.parent.mkdir()
    return triton_server(repo, extra_args=[f"--trace-config=triton,file={trace_file}"], **kwargs)


@pytest.mark.e2e
def test_guide_commands_collect_and_analyze_real_triton(tmp_path, triton_server):
    server = _traced_server(tmp_path, triton_server, env={"TRITON_ICD_PROFILE": "true"})
    done = run_script("collect_performance_trace.py", "--endpoint", server.http_url, "--model", "echo_delay",
                      "--duration", "2", "--output", "traces/", "--log-frequency", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "traces" / "collection.json").read_text())
    assert record["files"] and record["trace_settings"]["trace_level"] == ["TIMESTAMPS"]
    done = run_script("analyze_performance_trace.py", "traces/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "traces" / "trace_analysis.json").read_text())
    assert result["requests"] >= 5 and result["models"] == ["echo_delay"]
    # 20 ms sleep per batch inside execute() is measured as compute; which phase is largest depends on the
    # machine's load (a loaded client inflates network_client), so only the bound is asserted
    assert result["phases"]["compute_infer"]["mean_ms"] >= 19.0
    assert result["bottleneck"] in result["phases"] and f"bottleneck: {result['bottleneck']}" in done.stdout
    assert (tmp_path / result["plot"]).is_file()


@pytest.mark.e2e
def test_triton_stopping_mid_collection_is_one_error_and_leaves_nothing(tmp_path, triton_server):
    server = _traced_server(tmp_path, triton_server)
    collector = subprocess.Popen([sys.executable, str(REPO_ROOT / "scripts" / "collect_performance_trace.py"),
                                  "--endpoint", server.http_url, "--model", "echo_delay", "--duration", "8",
                                  "--output", "traces/"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    setting = f"{server.http_url}/v2/models/echo_delay/trace/setting"
    try:
        deadline = time.monotonic() + 120  # a bound for a loaded machine, not a timing assertion
        while httpx.get(setting, trust_env=False).json()["trace_level"] != ["TIMESTAMPS"]:
            assert collector.poll() is None and time.monotonic() < deadline, collector.communicate()
            time.sleep(0.1)
        server.stop()  # tracing is on and load is running: the server goes away under the collector
        _, stderr = collector.communicate(timeout=240)
    finally:
        collector.kill()
    assert collector.returncode == 2, stderr
    # where the collector was when the server went (its trace-off request, or the load's first contact) decides
    # which line names it; either is one line naming the server, never a stack trace
    assert ("Triton stopped answering" in stderr or f"endpoint {server.http_url}: unreachable" in stderr), stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "traces").exists()


@pytest.mark.e2e
def test_collect_refuses_server_without_trace_file(tmp_path, triton_small_server):
    done = run_script("collect_performance_trace.py", "--endpoint", triton_small_server.http_url, "--model",
                      "echo_delay", "--duration", "1", "--output", str(tmp_path / "t"))
    assert done.returncode == 2 and "trace-config" in done.stderr


def test_unwritable_output_is_refused_before_any_request(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run_script("collect_performance_trace.py", "--endpoint", "http://127.0.0.1:9", "--model", "m",
                      "--duration", "300", "--output", str(blocker / "traces"))
    assert done.returncode == 2 and "--output" in done.stderr and "cannot create the folder" in done.stderr


@pytest.mark.e2e
def test_missing_server_trace_folder_and_wrong_model_leave_nothing(tmp_path, triton_server):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_echo_delay_model(repo, EchoDelaySpec(delay_ms=1.0))
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = triton_server(repo, extra_args=[f"--trace-config=triton,file={server_dir / 'trace.json'}"])
    done = run_script("collect_performance_trace.py", "--endpoint", server.http_url, "--model", "no_such_model",
                      "--duration", "300", "--output", "traces/", cwd=tmp_path)
    assert done.returncode == 2 and "no_such_model" in done.stderr
    assert not (tmp_path / "traces").exists(), "a failed collection leaves no output folder behind"
    server_dir.rmdir()  # the server's trace folder is gone: refused before any load
    done = run_script("collect_performance_trace.py", "--endpoint", server.http_url, "--model", "echo_delay",
                      "--duration", "300", "--output", "traces/", cwd=tmp_path)
    assert done.returncode == 2 and f"{server_dir} is not a folder on this host" in done.stderr
    assert not (tmp_path / "traces").exists()
