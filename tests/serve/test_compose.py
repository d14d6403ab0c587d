"""The production compose files: valid for `docker-compose config`, mounted files exist, no default passwords,
and the compose-side nginx configs pass `nginx -t` (host names and certificates substituted)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "triton"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.green.yml", "docker-compose.scale.yml",
                 "docker-compose.secure.yml"]
MODEL_REPOSITORIES = {DEPLOY / "models", DEPLOY / "models-green",  # written by `icd export-triton`
                      DEPLOY / "triton-traces"}  # Triton's trace files (created when the stack starts)
CREDENTIALS = {"GF_ADMIN_USER": "ops", "GF_ADMIN_PASSWORD": "from-the-environment"}

pytestmark = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")


def _compose(name: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    base = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["docker-compose", "--env-file", str(empty_env_file), "-f", str(DEPLOY / name), "config"],
        cwd=DEPLOY, env={**base, **env}, capture_output=True, text=True, timeout=60,
    )


def _tls_dir(tmp_path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path / "tls"
    folder.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return folder


@pytest.mark.binary
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_is_valid_and_every_mount_exists(name, tmp_path):
    done = _compose(name, {**CREDENTIALS, "ICD_TLS_DIR": str(_tls_dir(tmp_path))}, tmp_path)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    tritons = [s for s in config["services"] if s.startswith("triton")]
    assert tritons
    for service_name, service in config["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if volume_is_bind(volume) and Path(source) not in MODEL_REPOSITORIES:
                assert Path(source).exists(), f"{name}: {service_name} mounts missing {source}"
        if service_name in tritons:
            assert "healthcheck" in service and "/v2/health/ready" in " ".join(service["healthcheck"]["test"])
            assert any("summary_latencies=true" in part for part in service["command"])
            build = service["build"]  # the image with the runtimes of every python-backend export icd writes
            assert Path(build["context"]) == DEPLOY and build["dockerfile"] == "triton.Dockerfile"
            assert build["args"]["TRITON_BASE_IMAGE"].endswith("-pyt-python-py3")
            assert "tritonserver" in service["image"]  # what `icd stack` runs as the bundled tritonserver


def volume_is_bind(volume) -> bool:
    if isinstance(volume, dict):
        return volume.get("type") == "bind"
    return volume.startswith(("/", "."))


@pytest.mark.binary
def test_stack_refuses_to_start_without_grafana_credentials(tmp_path):
    done = _compose("docker-compose.yml", {"GF_ADMIN_USER": "ops"}, tmp_path)
    assert done.returncode != 0 and "GF_ADMIN_PASSWORD" in done.stderr
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert "admin/admin" not in text and "GF_SECURITY_ADMIN_PASSWORD: admin" not in text


@pytest.mark.binary
def test_secure_stack_needs_tls_from_the_environment_and_hides_triton(tmp_path):
    assert _compose("docker-compose.secure.yml", {}, tmp_path).returncode != 0
    done = _compose("docker-compose.secure.yml", {"ICD_TLS_DIR": str(_tls_dir(tmp_path))}, tmp_path)
    config = yaml.safe_load(done.stdout)
    assert "ports" not in config["services"]["triton"], "Triton is not published"
    assert config["services"]["triton"]["networks"] == {"internal": None} or \
        list(config["services"]["triton"]["networks"]) == ["internal"]
    assert config["networks"]["internal"]["internal"] is True


def test_env_example_has_no_credentials():
    values = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#"))
    assert values["GF_ADMIN_USER"] == "" and values["GF_ADMIN_PASSWORD"] == ""


@pytest.mark.binary
@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="no nginx")
@pytest.mark.parametrize("name", ["nginx.conf", "nginx-ssl.conf"])
def test_nginx_configs_pass_nginx_t(name, tmp_path):
    tls = _tls_dir(tmp_path)
    text = (DEPLOY / name).read_text()
    for host in ("triton-gpu0", "triton-gpu1", "triton"):
        text = text.replace(f"server {host}:8000", "server 127.0.0.1:8000")
    text = text.replace("/etc/nginx/ssl/", f"{tls}/")
    text = "pid " + str(tmp_path / "nginx.pid") + ";\nerror_log " + str(tmp_path / "error.log") + ";\n" + text
    conf = tmp_path / name
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr


def _pins() -> dict[str, str]:
    """``name → version`` of the ``==`` pins in pyproject.toml's dependencies."""
    import tomllib

    deps = tomllib.loads((DEPLOY.parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(dep.split("==", 1) for dep in deps if "==" in dep)


def test_triton_image_installs_every_export_runtime_up_to_the_tested_versions():
    from packaging.requirements import Requirement

    dockerfile = (DEPLOY / "triton.Dockerfile").read_text()
    assert "COPY triton-requirements.txt" in dockerfile and "-r /opt/icd/triton-requirements.txt" in dockerfile
    lines = [line for line in (DEPLOY / "triton-requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    wanted = {req.name: req.specifier for req in map(Requirement, lines)}
    pins = _pins()
    for runtime in ("openvino", "onnxruntime"):  # the python backend's runtimes besides torch
        specifier = wanted[runtime]
        assert specifier.contains(pins[runtime]), f"{runtime}: the tested {pins[runtime]} is outside {specifier}"
        assert f"<={pins[runtime]}" in str(specifier), f"{runtime}: the upper bound is the tested version"
    assert not wanted["numpy"].contains("2.0.0")  # the image's torch and PyTriton's numpy<2
    assert "cryptography" in wanted  # encrypted permutation files
    ignored = (DEPLOY / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!triton-requirements.txt" in ignored  # never the exported models as build context
