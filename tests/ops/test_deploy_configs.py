"""Offline validation of the secure compose file (the Kubernetes manifests: tests/k8s)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.ops.helpers import REPO_ROOT

COMPOSE_SECURE = REPO_ROOT / "deploy" / "triton" / "docker-compose.secure.yml"


@pytest.mark.binary
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (validation only) not installed")
def test_secure_compose_exposes_no_triton_port(tmp_path):
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE_SECURE), "config"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "ICD_TLS_DIR": str(tmp_path)}, check=False)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert "ports" not in services["triton"]
    assert services["triton"]["networks"] == ["internal"] or set(services["triton"]["networks"]) == {"internal"}
    assert config["networks"]["internal"].get("internal") is True
    published = [str(p) for p in services["nginx"]["ports"]]
    assert len(published) == 1 and "443" in published[0]
    assert [name for name, svc in services.items() if svc.get("ports")] == ["nginx"]
