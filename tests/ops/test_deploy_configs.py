"""Offline validation of the deployment configs: the secure compose file and the Kubernetes manifests."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.ops.helpers import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
COMPOSE_SECURE = REPO_ROOT / "deploy" / "triton" / "docker-compose.secure.yml"
REQUIRED = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2",
            "ServiceMonitor": "monitoring.coreos.com/v1", "PodDisruptionBudget": "policy/v1", "ConfigMap": "v1"}


def _docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_every_kind_present_with_its_api_version():
    docs = _docs()
    assert {k: d["apiVersion"] for k, d in docs.items()} == REQUIRED
    kustomize = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomize["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_selectors_ports_and_targets_agree():
    docs = _docs()
    dep, svc, hpa, mon, pdb = (docs[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler",
                                                   "ServiceMonitor", "PodDisruptionBudget"))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    assert mon["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert svc["spec"]["type"] == "ClusterIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    volumes = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes
    assert all(d["metadata"]["namespace"] == "icd" for k, d in docs.items() if k != "ConfigMap")


def test_hpa_metric_is_served_by_the_adapter_rule():
    docs = _docs()
    metric = docs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    rules = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in rules}
    assert "nv_inference_queue_duration_us" in rules[0]["seriesQuery"]


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
