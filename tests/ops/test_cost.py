from __future__ import annotations

import json

import httpx
import pytest

from icd.errors import ConfigError
from icd.ops.cost import SweepSettings, cost_row, pareto_front, recommend
from icd.ops.cost_model import COST_MODEL_DIR, InstancePrice, load_cost_model
from icd.ops.model_reload import BatchingConfig, apply_batching
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from tests.ops.helpers import run_script

PRICE = InstancePrice(type="x", price_per_hour=36.0, accelerators=1, region="r", source="https://e", as_of="d")


def _settings(**kw) -> SweepSettings:
    return SweepSettings(endpoint="http://127.0.0.1:1", model="m", target_p95_ms=100, target_utilization=0.8,
                         cost_model="cpu", **kw)


@pytest.mark.parametrize("name", ["aws-p4d", "aws-g5", "gcp-a2", "cpu"])
def test_shipped_cost_models_carry_their_source(name):
    model, path = load_cost_model(name)
    assert path.parent == COST_MODEL_DIR and model.note == "list price as published"
    for entry in model.instances:
        assert entry.source.startswith("https://") and "list price as published" in entry.as_of


def test_unknown_cost_model_lists_shipped():
    with pytest.raises(ConfigError, match="aws-p4d"):
        load_cost_model("azure-nd")


def test_cost_projection_arithmetic():
    row = cost_row(BatchingConfig(2, 8, 0), {"throughput_rps": 100.0, "latency_ms": {"p95": 50.0}, "errors": {"total": 0}},
                   PRICE, _settings(demand_rps=250.0))
    # 36 $/h / (100 rps * 0.8 * 3600 s) * 1e6 = 125 $ per million requests; 250 rps needs ceil(250/80) = 4 servers
    assert row["projected_cost_per_million_requests"] == pytest.approx(125.0)
    assert row["servers_for_demand"] == 4 and row["projected_fleet_cost_per_hour"] == pytest.approx(144.0)
    assert row["meets_latency"]
    slow = cost_row(BatchingConfig(1, 8, 0), {"throughput_rps": 100.0, "latency_ms": {"p95": 150.0},
                                              "errors": {"total": 0}}, PRICE, _settings())
    assert not slow["meets_latency"]


def test_pareto_and_recommendation():
    rows = [
        {"config_id": "a", "throughput_rps": 100, "p95_ms": 50, "errors": 0, "meets_latency": True, "projected_cost_per_million_requests": 3.0},
        {"config_id": "b", "throughput_rps": 200, "p95_ms": 90, "errors": 0, "meets_latency": True, "projected_cost_per_million_requests": 1.5},
        {"config_id": "c", "throughput_rps": 150, "p95_ms": 95, "errors": 0, "meets_latency": True, "projected_cost_per_million_requests": 2.0},
        {"config_id": "d", "throughput_rps": 300, "p95_ms": 300, "errors": 0, "meets_latency": False, "projected_cost_per_million_requests": 1.0},
    ]
    assert sorted(pareto_front(rows)) == ["a", "b", "d"]
    assert recommend(rows)["config_id"] == "b"
    assert recommend([rows[3]]) is None


def test_apply_batching_keeps_kind_and_filters_preferred():
    base = {"max_batch_size": 32, "instance_group": [{"count": 1, "kind": "KIND_GPU", "gpus": [0]}],
            "dynamic_batching": {"max_queue_delay_microseconds": "100", "preferred_batch_size": [4, 16]}}
    cfg = apply_batching(base, BatchingConfig(3, 8, 2000))
    assert cfg["instance_group"] == [{"kind": "KIND_GPU", "gpus": [0], "count": 3}]
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 2000, "preferred_batch_size": [4]}
    assert base["max_batch_size"] == 32


@pytest.mark.e2e
def test_guide_command_sweeps_live_server(tmp_path, triton_server):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_echo_delay_model(repo, EchoDelaySpec(delay_ms=10.0, max_batch_size=16, max_queue_delay_us=1000))
    server = triton_server(repo, model_control_mode="explicit", load_models=("*",))
    done = run_script("optimize_instances.py", "--target-latency", "100", "--target-utilization", "80",
                      "--cost-model", "aws-p4d", "--report", "optimization_report.json",
                      "--endpoint", server.http_url, "--model", "echo_delay", "--instance-counts", "1,2",
                      "--max-batch-sizes", "8", "--queue-delays-us", "0", "--duration", "1.5", "--concurrency", "4",
                      "--input-shape", "16", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "optimization_report.json").read_text())
    assert report["status"] == "complete" and len(report["candidates"]) == 2
    assert all(r["requests"] > 10 and r["errors"] == 0 for r in report["candidates"])
    assert report["cost_basis"]["instance"]["type"] == "p4d.24xlarge"
    assert report["cost_basis"]["file"].endswith("aws-p4d.yaml") and "projection" in report["cost_basis"]["how"]
    assert report["recommendation"]["config_id"] in report["pareto_front"]
    assert (tmp_path / "optimization_report.png").is_file()
    live = httpx.get(f"{server.http_url}/v2/models/echo_delay/config", trust_env=False).json()
    assert live["max_batch_size"] == 16  # the repository's own config is back after the sweep


@pytest.mark.e2e
def test_sweep_refuses_server_without_explicit_control(tmp_path, triton_small_server):
    done = run_script("optimize_instances.py", "--report", str(tmp_path / "r.json"), "--endpoint",
                      triton_small_server.http_url, "--model", "echo_delay", "--instance-counts", "1",
                      "--max-batch-sizes", "8", "--queue-delays-us", "0", "--duration", "1")
    assert done.returncode == 2 and "explicit" in done.stderr and "Traceback" not in done.stderr
