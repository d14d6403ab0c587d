"""`icd stack` against the real servers: the blue stack of docker-compose.yml with every service, restart with a
changed environment, logs, a copied model's reason, a port in use for every service, a failed start that leaves
nothing behind. Triton serves the *synthetic* echo_delay model (not a neural network)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from icd.cli.main import main
from icd.monitor.process import pid_alive
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from icd.stack.compose_file import load_compose
from icd.stack.compose_stack import down, up
from icd.stack.guide_runner import PORT_VARIABLES
from icd.stack.state import StackState

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path, free_port, monkeypatch) -> Iterator[Path]:
    """A copy of deploy/ with an echo_delay model, every port moved to a free one, a state folder; torn down."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("models", "triton-traces", ".env"))
    write_echo_delay_model(tmp_path / "deploy" / "triton" / "models", EchoDelaySpec(delay_ms=1.0))
    for variable in PORT_VARIABLES.values():
        monkeypatch.setenv(variable, str(free_port()))
    monkeypatch.setenv("ICD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in ("docker-compose.green.yml", "docker-compose.yml"):
        project = load_compose(tmp_path / "deploy" / "triton" / name)
        down(project, StackState(tmp_path / "state", project.name))


def _records(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "state" / "stack" / "triton").glob("*.json"))


def test_blue_stack_up_restart_logs_down(stack: Path, capsys) -> None:
    env = os.environ
    assert main(["stack", "up", "-d"]) == 0
    out = capsys.readouterr().out
    assert "model echo_delay v1: READY" in out
    assert _records(stack) == ["alertmanager", "grafana", "prometheus", "router", "triton"]
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(f"http://127.0.0.1:{env['TRITON_HTTP_PORT']}/v2/health/ready").status_code == 200
        assert http.get(f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/-/ready").status_code == 200
        assert http.get(f"http://127.0.0.1:{env['ALERTMANAGER_PORT']}/-/ready").status_code == 200
        dashboard = http.get(f"http://127.0.0.1:{env['GRAFANA_PORT']}/")
        assert dashboard.status_code == 302
        assert dashboard.headers["location"].endswith(f":{env['PROMETHEUS_PORT']}/consoles/icd_overview.html")
        assert http.get(dashboard.headers["location"]).status_code == 200
        assert http.get(f"http://127.0.0.1:{env['ROUTER_PORT']}/icd/router").status_code == 200
        loaded = http.get(f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/api/v1/status/config").json()["data"]["yaml"]
        jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in yaml.safe_load(loaded)["scrape_configs"]}
        assert jobs["triton"] == [f"127.0.0.1:{env['TRITON_METRICS_PORT']}"]
        assert jobs["router"] == [f"127.0.0.1:{env['ROUTER_EXPORTER_PORT']}"]
    # the router is where `icd switch` / `icd ab` look for it
    assert main(["router", "status"]) == 0
    assert '"running": true' in capsys.readouterr().out
    # a second `up` leaves running services alone
    assert main(["stack", "up", "-d"]) == 0 and "triton is up-to-date" in capsys.readouterr().out

    # restart applies the environment as it is now (the guide's `export TRITON_LOG_VERBOSE=1`)
    old_pid = StackState(stack / "state", "triton").read("triton").pids[0]
    env["TRITON_LOG_VERBOSE"] = "1"
    try:
        assert main(["stack", "restart", "triton"]) == 0
    finally:
        del env["TRITON_LOG_VERBOSE"]
    assert "model echo_delay v1: READY" in capsys.readouterr().out
    assert not pid_alive(old_pid)
    assert main(["stack", "logs", "triton_triton_1"]) == 0
    assert "HTTP request" in capsys.readouterr().out  # verbose log lines after the restart

    # a copied model folder (the guide's A/B prep before its edit) shows Triton's reason, not "v?: ?"
    models = stack / "deploy" / "triton" / "models"
    shutil.copytree(models / "echo_delay", models / "echo_copy")
    assert main(["stack", "restart", "triton"]) == 1
    out = capsys.readouterr().out
    assert "model echo_copy: NOT LOADED (Poll failed for model directory 'echo_copy': unexpected directory name" in out
    assert "not ready: triton/echo_copy" in out and "?" not in out.split("echo_copy")[0][-3:]
    assert main(["stack", "ps"]) == 0 and "triton_triton_1" in capsys.readouterr().out

    pids = [r.pids[0] for r in StackState(stack / "state", "triton").records()]
    assert main(["stack", "down"]) == 0
    assert "stopped: router" in capsys.readouterr().out
    assert _records(stack) == []
    assert not any(pid_alive(pid) for pid in pids)


def test_port_in_use_for_every_service_names_it_and_starts_nothing(stack: Path) -> None:
    from icd.errors import UserError

    blue = load_compose(stack / "deploy" / "triton" / "docker-compose.yml")
    green = load_compose(stack / "deploy" / "triton" / "docker-compose.green.yml")
    state = StackState(stack / "state", "triton")
    cases = {("triton", "http"): "TRITON_HTTP_PORT", ("triton", "grpc"): "TRITON_GRPC_PORT",
             ("triton", "metrics"): "TRITON_METRICS_PORT", ("prometheus", "web"): "PROMETHEUS_PORT",
             ("alertmanager", "web"): "ALERTMANAGER_PORT", ("grafana", "web"): "GRAFANA_PORT",
             ("router", "http"): "ROUTER_PORT", ("router", "exporter"): "ROUTER_EXPORTER_PORT",
             ("triton-green", "http"): "GREEN_HTTP_PORT", ("triton-green", "grpc"): "GREEN_GRPC_PORT",
             ("triton-green", "metrics"): "GREEN_METRICS_PORT"}
    for (service, role), variable in cases.items():
        port = int(os.environ[variable])
        with socket.socket() as busy:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            busy.bind(("127.0.0.1", port))
            busy.listen()
            project = green if service.startswith("triton-green") else blue
            with pytest.raises(UserError) as caught:
                up(project, state)
        assert str(caught.value).startswith(f"{service}: {role} port {port} is already in use on 127.0.0.1")
        assert variable in str(caught.value)
        assert state.records() == []


def test_failed_start_stops_what_it_started(stack: Path, capsys) -> None:
    (stack / "deploy" / "triton" / "monitoring" / "alertmanager.yml").write_text("route: [not, a, route]\n")
    assert main(["stack", "up", "-d"]) == 2
    err = capsys.readouterr().err
    assert "alertmanager: alertmanager exited" in err or "alertmanager: alertmanager not ready" in err
    assert _records(stack) == []
    triton_log = stack / "state" / "stack" / "triton" / "logs" / "triton.log"
    assert "Signal (15) received" in triton_log.read_text(), "Triton was started, then stopped"
