"""Compose files read as docker-compose reads them: interpolation, .env, ports, volumes, the router section."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from icd.errors import ConfigError
from icd.stack.compose_file import PortMapping, interpolate, load_compose, read_env_file
from icd.stack.compose_stack import ServiceKind, embedded_service, kind_of
from icd.stack.state import StackState

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "triton"
GUIDE_LAYOUT = {("triton", "http"): 8000, ("triton", "grpc"): 8011, ("triton", "metrics"): 8002,
                ("prometheus", "web"): 9090, ("alertmanager", "web"): 9093, ("grafana", "web"): 3000,
                ("router", "http"): 8080, ("router", "exporter"): 9180,
                ("triton-green", "http"): 8001, ("triton-green", "grpc"): 8101, ("triton-green", "metrics"): 8102}


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""), ("${A}", {"A": "1"}, "1"),
    ("$A/b", {"A": "a"}, "a/b"), ("$$A", {"A": "a"}, "$A"), ("${A:+y}", {"A": "1"}, "y"), ("${A:+y}", {}, ""),
    ("p${A:-8000}:8000", {"A": "18000"}, "p18000:8000"),
])
def test_interpolation_follows_compose(text, env, expected):
    assert interpolate(text, env, "f") == expected


def test_required_variable_names_itself():
    with pytest.raises(ConfigError, match="set GF in .env"):
        interpolate("${GF:?set GF in .env}", {}, "f")
    with pytest.raises(ConfigError, match="invalid interpolation"):
        interpolate("${1bad}", {}, "f")


def test_env_file_and_shell_precedence(tmp_path):
    shutil.copy(DEPLOY / "docker-compose.yml", tmp_path / "docker-compose.yml")
    (tmp_path / "monitoring").mkdir()
    (tmp_path / ".env").write_text("# ports\nTRITON_HTTP_PORT=18000\nexport PROMETHEUS_PORT='19090'\n")
    project = load_compose(tmp_path / "docker-compose.yml", environ={"PROMETHEUS_PORT": "29090"})
    assert project.service("triton").host_port(8000) == 18000
    assert project.service("prometheus").ports == (PortMapping(29090, 9090, "PROMETHEUS_PORT"),)
    (tmp_path / ".env").write_text("not a pair\n")
    with pytest.raises(ConfigError, match=r"\.env:1: expected KEY=VALUE"):
        read_env_file(tmp_path / ".env")


def test_guide_port_layout_is_the_compose_default(tmp_path):
    seen = {}
    for name in ("docker-compose.yml", "docker-compose.green.yml"):
        project = load_compose(DEPLOY / name, environ={})
        state = StackState(tmp_path, project.name)
        for service in project.service_names:
            for role, port in embedded_service(project, service, state).ports.items():
                seen[(service, role)] = port
    assert seen == GUIDE_LAYOUT
    assert load_compose(DEPLOY / "docker-compose.yml", environ={}).name == "triton"  # container triton_triton_1


@pytest.mark.binary
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_gives_the_same_ports(tmp_path):
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    published = {}
    for name in ("docker-compose.yml", "docker-compose.green.yml"):
        done = subprocess.run(["docker-compose", "--env-file", str(env_file), "-f", str(DEPLOY / name), "config"],
                              cwd=DEPLOY, env={"PATH": "/usr/bin:/bin", "GF_ADMIN_USER": "a", "GF_ADMIN_PASSWORD": "b"},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        for service, body in yaml.safe_load(done.stdout)["services"].items():
            for port in body.get("ports", []):
                published[(service, int(port["target"]))] = int(port["published"])
    assert published[("triton", 8000)] == 8000 and published[("triton", 8001)] == 8011
    assert published[("triton-green", 8000)] == 8001 and published[("grafana", 3000)] == 3000
    assert published[("prometheus", 9090)] == 9090 and published[("alertmanager", 9093)] == 9093


def test_kinds_and_unsupported_service(tmp_path):
    project = load_compose(DEPLOY / "docker-compose.yml", environ={})
    assert [kind_of(project, n) for n in project.service_names] == [
        ServiceKind.TRITON, ServiceKind.PROMETHEUS, ServiceKind.ALERTMANAGER, ServiceKind.DASHBOARD,
        ServiceKind.ROUTER]
    scale = load_compose(DEPLOY / "docker-compose.scale.yml", environ={})
    with pytest.raises(ConfigError, match="load-balancer.*no embedded equivalent"):
        kind_of(scale, "load-balancer")
    with pytest.raises(ConfigError, match="no service 'tritn'"):
        project.service("tritn")


def test_prometheus_targets_as_the_containers_resolve_them(tmp_path):
    env = {"TRITON_METRICS_PORT": "18002", "ROUTER_EXPORTER_PORT": "19180", "PROMETHEUS_PORT": "19090",
           "ALERTMANAGER_PORT": "19093"}
    project = load_compose(DEPLOY / "docker-compose.yml", environ=env)
    config = embedded_service(project, "prometheus", StackState(tmp_path, "triton")).config()
    targets = {job.name: list(job.targets) for job in config.scrape_jobs}
    assert targets["triton"] == ["127.0.0.1:18002"] and targets["router"] == ["127.0.0.1:19180"]
    assert targets["prometheus"] == ["127.0.0.1:19090"] and targets["load_generator"] == ["127.0.0.1:9101"]
    assert config.alertmanagers == ["127.0.0.1:19093"]
    assert [p.name for p in config.rule_files] == ["prometheus_rules.yml"] and config.rule_files[0].is_file()


def test_triton_command_and_volumes_map_to_the_host(tmp_path):
    env = {"TRITON_LOG_VERBOSE": "1", "TRITON_ICD_CACHE_SIZE": "512MB"}
    project = load_compose(DEPLOY / "docker-compose.yml", environ=env)
    service = embedded_service(project, "triton", StackState(tmp_path, "triton"))
    server = service.server()
    assert server.model_repository == DEPLOY / "models" and server.log_verbose == 1
    assert server.model_control_mode.value == "explicit" and server.load_models == ("*",)
    assert f"--trace-config=triton,file={DEPLOY / 'triton-traces' / 'trace.json'}" in server.extra_args
    assert server.env["TRITON_ICD_CACHE_SIZE"] == "512MB"
