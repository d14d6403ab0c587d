"""``icd tune`` on the real embedded Triton, with the synthetic ``echo_delay`` model (figures are of that model)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import sys

import httpx
import pytest

from icd.export.config_pbtxt import read_config
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from icd.tune.measure import LoadSpec, Measurer
from icd.tune.measurement import PointStatus, Slo
from icd.tune.run import run_tune
from icd.tune.server import LaunchMode, LocalServer, RemoteServer
from icd.tune.settings import TuneSettings
from icd.tune.space import Candidate, SearchSpace
from tests.fixtures.triton import start_triton
from tests.ops.helpers import REPO_ROOT, run_icd
from tests.tune.test_variants import write_provenance

pytestmark = pytest.mark.e2e
SHORT = ["--instance-counts", "1,2", "--threads", "1", "--max-batch-sizes", "8", "--queue-delays-us", "0",
         "--concurrency", "2,4", "--duration", "0.4", "--warmup", "0.2", "--input-shape", "16"]
GUIDE = ["--target-latency", "100", "--target-utilization", "80", "--cost-model", "aws-p4d",
         "--report", "optimization_report.json"]


def _echo_repo(root, **kw):
    root.mkdir(parents=True, exist_ok=True)
    write_echo_delay_model(root, EchoDelaySpec(delay_ms=5.0, max_batch_size=16, max_queue_delay_us=1000, **kw))
    return root


@pytest.fixture(scope="module")
def explicit_echo(tmp_path_factory):
    """One server in explicit model-control mode serving echo_delay (max batch 16, 1000 µs) for this module."""
    server = start_triton(_echo_repo(tmp_path_factory.mktemp("echo")), model_control_mode="explicit",
                          load_models=("*",))
    yield server
    server.stop()


def _guide_script(capsys, monkeypatch, cwd, *args: str) -> tuple[int, str, str]:
    """Run scripts/optimize_instances.py as the guide does (the file itself, in this process), in ``cwd``."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["scripts/optimize_instances.py", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO_ROOT / "scripts" / "optimize_instances.py"), run_name="__main__")
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_guide_command_tunes_an_explicit_server_and_restores_it(tmp_path, explicit_echo, capsys, monkeypatch):
    server = explicit_echo
    code, stdout, stderr = _guide_script(capsys, monkeypatch, tmp_path, *GUIDE, "--endpoint", server.http_url,
                                         "--model", "echo_delay", *SHORT)
    assert code == 0, stdout + stderr
    report = json.loads((tmp_path / "optimization_report.json").read_text())
    assert report["status"] == "complete" and report["launch"]["mode"] == "remote"
    assert report["objective_tag"] == "projected_cost_per_million_requests"  # --cost-model: the cost objective
    assert report["cost_basis"]["instance"]["type"] == "p4d.24xlarge" and "projection" in report["cost_basis"]["how"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["candidates"])
    assert "c=2" in stderr and "recommended" in stdout
    winner = read_config(tmp_path / "optimization_report.config.pbtxt")
    assert winner.max_batch_size == 8 and winner.instance_group[0].count == report["recommendation"]["instance_count"]
    assert (tmp_path / "optimization_report.html").is_file() and (tmp_path / "optimization_report.png").is_file()
    live = httpx.get(f"{server.http_url}/v2/models/echo_delay/config", trust_env=False).json()
    assert live["max_batch_size"] == 16  # the configuration found at the start is back


def test_an_slo_nobody_meets_names_the_closest_and_writes_no_config(tmp_path, explicit_echo, capsys):
    done = run_icd(capsys, "tune", "--model", "echo_delay", "--endpoint", explicit_echo.http_url,
                   "--target-latency", "0.01", "--report", str(tmp_path / "t.json"), "--instance-counts", "1",
                   "--threads", "1", "--max-batch-sizes", "8", "--queue-delays-us", "0", "--concurrency", "1",
                   "--duration", "0.4", "--warmup", "0.2", "--input-shape", "16", "--quiet")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no configuration meets p99 <= 0.01 ms" in done.stdout and "closest: i1_t1_b8_d0" in done.stdout
    assert not (tmp_path / "t.config.pbtxt").exists()
    assert json.loads((tmp_path / "t.json").read_text())["recommendation"] is None


def test_private_server_fallback_kind_gpu_guard_and_the_winner_loads(tmp_path, triton_small_server, triton_server,
                                                                     capsys, monkeypatch):
    repo = tmp_path / "repo"
    _echo_repo(repo)
    config = repo / "echo_delay" / "config.pbtxt"
    config.write_text(config.read_text().replace("KIND_CPU", "KIND_GPU"))  # as Model Analyzer wrote on CPU hosts
    shutil.copytree(repo / "echo_delay" / "1", repo / "echo_delay" / "2")  # a second (synthetic) variant
    write_provenance(repo / "echo_delay" / "1", "torchscript", "fp32")
    write_provenance(repo / "echo_delay" / "2", "onnx", "fp32")
    monkeypatch.chdir(tmp_path)
    args = ["optimize-instances", "--model", "echo_delay", "--endpoint", triton_small_server.http_url,  # mode none
            "--model-repository", str(repo), "--report", "tune/echo.json", *SHORT, "--versions", "1,2"]
    refused = run_icd(capsys, *args, "--launch-mode", "remote")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cannot reload models" in refused.stderr and "--launch-mode local --model-repository" in refused.stderr
    assert not (tmp_path / "tune").exists()  # nothing written
    done = run_icd(capsys, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "tune" / "echo.json").read_text())
    assert report["launch"]["mode"] == "local" and report["kind"] == "KIND_CPU"
    assert any("no GPU" in n for n in report["notes"]) and any("private Triton" in n for n in report["notes"])
    assert report["measurements"] >= 2
    served = tmp_path / "served"  # the winner's config.pbtxt loads on a fresh server
    shutil.copytree(repo, served)
    shutil.copy(tmp_path / "tune" / "echo.config.pbtxt", served / "echo_delay" / "config.pbtxt")
    version = report["recommendation"]["version"]
    assert {r["version"] for r in report["candidates"]} == {1, 2} and report["recommendation"]["runtime"]
    assert f"version {version}: {report['recommendation']['runtime']} fp32" in report["verdict"]
    fresh = triton_server(served)
    assert fresh.model_ready("echo_delay", str(version)) and not fresh.model_ready("echo_delay", str(3 - version))


def test_remote_server_dying_mid_search_stops_cleanly(tmp_path, triton_server):
    server = triton_server(_echo_repo(tmp_path / "repo"), model_control_mode="explicit", load_models=("*",))
    settings = TuneSettings(model="echo_delay", slo=Slo(100.0), launch_mode=LaunchMode.REMOTE,
                            endpoint=server.http_url, report=tmp_path / "tune.json", progress=False,
                            space=SearchSpace(instance_counts=[1, 2], threads=[1], max_batch_sizes=[8],
                                              queue_delays_us=[0], concurrency=[1, 2, 4]),
                            load=LoadSpec(duration_s=0.4, warmup_s=0.2, input_shape=16))
    doc = run_tune(settings, on_point=lambda point: server.stop())
    assert doc["status"] == "stopped" and "the server died" in doc["stop_reason"]
    assert "rerun the same command to resume" in doc["stop_reason"]
    statuses = [p["status"] for p in json.loads((tmp_path / "tune.checkpoint.json").read_text())["points"]]
    assert statuses == ["ok", "server_died"]
    assert (tmp_path / "tune.html").is_file()


def test_local_server_dying_is_restarted_and_recorded(tmp_path):
    server = LocalServer(_echo_repo(tmp_path / "repo"), "echo_delay", log_file=tmp_path / "triton.log")
    try:
        measurer = Measurer(server, "echo_delay", server.base_config(), "KIND_CPU",
                            LoadSpec(duration_s=0.4, warmup_s=0.2, input_shape=16))
        candidate = Candidate(1, 1, 8)
        assert measurer.measure(candidate, 2).status == PointStatus.OK
        os.kill(server.server.pid, signal.SIGKILL)
        died = measurer.measure(candidate, 2)
        assert died.status == PointStatus.SERVER_DIED and "restarted" in died.detail
        assert server.alive() and measurer.measure(candidate, 2).status == PointStatus.OK
    finally:
        server.close(None)
    assert isinstance(RemoteServer("http://127.0.0.1:1", "m").alive(), bool)


def test_a_model_the_remote_server_cannot_load_is_one_line(tmp_path, explicit_echo, capsys):
    done = run_icd(capsys, "tune", "--model", "bert_base", "--endpoint", explicit_echo.http_url, "--launch-mode",
                   "remote", "--report", str(tmp_path / "t.json"), "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--model bert_base: Triton at" in done.stderr and "cannot load it" in done.stderr
    assert list(tmp_path.iterdir()) == []
