"""The embedded tritonserver: start/ready/stop, port and binary errors, no orphans (real server)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from icd.errors import UserError
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from icd.serve.triton_env import TRITONSERVER_BIN_ENV
from icd.serve.triton_local import ModelControlMode, TritonServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _ids(batch: int = 2, length: int = 6) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(batch * length, dtype=np.int64).reshape(batch, length)
    return ids, np.ones_like(ids)


@pytest.mark.e2e
def test_serves_synthetic_model_over_http_and_grpc_then_stops_without_orphans(triton_repo_small, free_port):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server = TritonServer(triton_repo_small, free_port(), free_port(), free_port())
    with server:
        pid = server.pid
        ids, mask = _ids()
        expected = ids.sum(axis=1, keepdims=True) + np.arange(2)[None, :]
        with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
            inputs = [httpclient.InferInput("input_ids", ids.shape, "INT64"),
                      httpclient.InferInput("attention_mask", mask.shape, "INT64")]
            inputs[0].set_data_from_numpy(ids)
            inputs[1].set_data_from_numpy(mask)
            np.testing.assert_array_equal(client.infer("echo_delay", inputs).as_numpy("logits"), expected)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            inputs = [grpcclient.InferInput("input_ids", ids.shape, "INT64"),
                      grpcclient.InferInput("attention_mask", mask.shape, "INT64")]
            inputs[0].set_data_from_numpy(ids)
            inputs[1].set_data_from_numpy(mask)
            np.testing.assert_array_equal(client.infer("echo_delay", inputs).as_numpy("logits"), expected)
        assert _group_members(pid), "the server and its python stub run in their own process group"
    assert not _alive(pid)
    assert _group_members(pid) == []


@pytest.mark.e2e
def test_port_in_use_is_a_one_line_user_error(triton_repo_small, free_port):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"http port {port} is already in use"):
            TritonServer(triton_repo_small, port, free_port(), free_port()).start()


def test_missing_binary_is_a_user_error(triton_repo_small, free_port, monkeypatch, tmp_path):
    monkeypatch.setenv(TRITONSERVER_BIN_ENV, str(tmp_path / "no-tritonserver"))
    with pytest.raises(UserError, match="tritonserver binary not found"):
        TritonServer(triton_repo_small, free_port(), free_port(), free_port()).start()


def test_missing_repository_is_a_user_error(tmp_path, free_port):
    with pytest.raises(UserError, match="model repository not found"):
        TritonServer(tmp_path / "nope", free_port(), free_port(), free_port()).start()


@pytest.mark.e2e
def test_broken_model_fails_alone_and_explicit_mode_reloads(tmp_path, triton_server):
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="good"))
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="broken"))
    (tmp_path / "broken" / "1" / "model.py").write_text("raise RuntimeError('synthetic breakage')\n")
    server = triton_server(tmp_path, model_control_mode=ModelControlMode.EXPLICIT)
    assert server.model_ready("good")
    assert not server.model_ready("broken")
    states = {row["name"]: row for row in server.repository_index()}
    assert states["broken"]["state"] == "UNAVAILABLE" and "synthetic breakage" in states["broken"]["reason"]
    write_echo_delay_model(tmp_path, EchoDelaySpec(name="broken"))  # repaired
    server.load_model("broken")
    assert server.model_ready("broken")
    server.unload_model("good")
    assert not server.model_ready("good")
    with pytest.raises(UserError, match="could not load model 'missing'"):
        server.load_model("missing")


@pytest.mark.e2e
def test_session_server_fixture_serves_the_synthetic_model(triton_small_server):
    import httpx

    assert triton_small_server.running and triton_small_server.model_ready("echo_delay")
    config = httpx.get(f"{triton_small_server.http_url}/v2/models/echo_delay/config", trust_env=False).json()
    assert config["parameters"]["icd_synthetic"]["string_value"] == "true"
    assert float(config["parameters"]["icd_delay_ms"]["string_value"]) == 5.0
    text = httpx.get(triton_small_server.metrics_url, trust_env=False).text
    assert "nv_inference_request_success" in text


@pytest.mark.e2e
def test_synthetic_error_rate_fails_requests(tmp_path, triton_server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    write_echo_delay_model(tmp_path, EchoDelaySpec(name="always_fails", delay_ms=0, error_rate=1.0))
    server = triton_server(tmp_path)
    ids, mask = _ids()
    with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
        inputs = [httpclient.InferInput("input_ids", ids.shape, "INT64"),
                  httpclient.InferInput("attention_mask", mask.shape, "INT64")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        with pytest.raises(InferenceServerException, match="synthetic injected error"):
            client.infer("always_fails", inputs)


def test_binary_that_cannot_run_is_a_user_error(triton_repo_small, free_port, monkeypatch, tmp_path):
    fake = tmp_path / "tritonserver"
    fake.write_bytes(b"\x7fELF-not-really")
    fake.chmod(0o755)
    monkeypatch.setenv(TRITONSERVER_BIN_ENV, str(fake))
    with pytest.raises(UserError, match="cannot run .*tritonserver"):
        TritonServer(triton_repo_small, free_port(), free_port(), free_port()).start()
