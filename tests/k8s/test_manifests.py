"""The scale-out files (deploy/k8s, deploy/kserve, deploy/helm), validated offline against real schemas.

Core kinds: kubernetes-validate (strict). CRDs (InferenceService, ServiceMonitor, PodMonitor): their vendored
schemas. Helm values: the schemas of what the charts read. Then the cross-file contracts a schema cannot see.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest
import yaml

from icd.k8s import validate
from icd.k8s.crd_schema import schema_from_crd, strict_schema
from icd.k8s.validate import DEPLOY_DIR, validate_documents, validate_paths, validate_resource

K8S, KSERVE, HELM = DEPLOY_DIR / "k8s", DEPLOY_DIR / "kserve", DEPLOY_DIR / "helm"


def _load(path: Path) -> dict:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return doc


def _by_kind(folder: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(folder.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                docs[doc["kind"]] = doc
    return docs


def test_every_shipped_file_validates():
    files, findings = validate_paths()
    assert findings == []
    names = {p.name for p in files}
    assert {"deployment.yaml", "hpa.yaml", "inferenceservice.yaml", "triton-values.yaml",
            "prometheus-adapter-values.yaml", "podmonitor.yaml"} <= names


@pytest.mark.parametrize(("path", "where", "value", "message"), [
    (K8S / "autoscaling" / "hpa.yaml", ("spec", "minReplicas"), "two", "spec.minReplicas: 'two' is not of type"),
    (K8S / "deployment.yaml", ("spec", "replicas"), "2", "spec.replicas: '2' is not of type"),
    (KSERVE / "inferenceservice.yaml", ("spec", "predictor", "minReplicas"), "two",
     "spec.predictor.minReplicas: 'two' is not of type 'integer'"),
    (KSERVE / "inferenceservice.yaml", ("spec", "predictor", "model", "storageURI"), "s3://x",
     "'storageURI' was unexpected"),  # a misspelt field: strict, as kubectl apply
    (K8S / "servicemonitor.yaml", ("spec", "endpoints"), "metrics", "spec.endpoints: 'metrics' is not of type 'array'"),
    (HELM / "triton-values.yaml", ("image", "numGpus"), "one", "image.numGpus: 'one' is not of type 'integer'"),
    (HELM / "triton-values.yaml", ("replicaCount",), 2, "'replicaCount' was unexpected"),
    (HELM / "prometheus-adapter-values.yaml", ("prometheus", "port"), "9090", "prometheus.port: '9090' is not of type"),
])
def test_a_value_of_the_wrong_type_is_named(path, where, value, message):
    doc = copy.deepcopy(_load(path))
    node = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    findings = validate_documents(path, [doc])
    assert findings and any(message in str(f) for f in findings), findings
    assert str(path) in str(findings[0])


def test_unknown_kind_and_non_resources_are_errors():
    assert "no schema for Widget example.com/v1" in validate_resource(
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})[0]
    assert validate_resource(["not", "a", "mapping"]) == ["not a Kubernetes resource (needs apiVersion and kind)"]


def test_strict_crd_schema():
    crd = {"metadata": {"name": "w"}, "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
        "type": "object", "description": "d", "properties": {
            "spec": {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}}}}}}]}}
    schema = schema_from_crd(crd, "v1")
    assert schema["additionalProperties"] is False and "description" not in schema
    assert schema["properties"]["spec"]["properties"]["n"]["type"] == ["integer", "null"]
    assert "additionalProperties" not in schema["properties"]["free"]
    assert strict_schema([{"properties": {}}]) == [{"properties": {}, "additionalProperties": False}]
    with pytest.raises(ValueError, match="no version 'v2'"):
        schema_from_crd(crd, "v2")
    for name in validate.CRD_SCHEMAS.values():  # vendored files are strict schemas
        schema = json.loads(gzip.decompress((validate.SCHEMA_DIR / name).read_bytes()))
        assert schema["additionalProperties"] is False and "spec" in schema["properties"]


def test_plain_manifests_agree_with_each_other():
    docs = _by_kind(K8S)
    dep, svc, hpa, mon, pdb = (docs[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor",
                                                  "PodDisruptionBudget"))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    assert mon["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert svc["spec"]["type"] == "ClusterIP"
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == ("Deployment", dep["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    volumes = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes


def _adapter_rules() -> list[dict]:
    config_map = _load(K8S / "autoscaling" / "prometheus-adapter-rules.yaml")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_queue_time_hpa_is_served_by_the_same_adapter_rule_everywhere():
    hpa = _load(K8S / "autoscaling" / "hpa.yaml")
    metric = hpa["spec"]["metrics"][0]
    rules = _adapter_rules()
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in rules}
    assert "nv_inference_queue_duration_us" in rules[0]["seriesQuery"]
    assert _load(HELM / "prometheus-adapter-values.yaml")["rules"]["custom"] == rules  # one rule, two carriers


def _apply_kustomize_replace(doc: dict, patch_text: str) -> dict:
    out = copy.deepcopy(doc)
    for op in yaml.safe_load(patch_text):
        assert op["op"] == "replace"
        *parents, last = op["path"].strip("/").split("/")
        node = out
        for key in parents:
            node = node[key]
        assert last in node
        node[last] = op["value"]
    return out


def test_kserve_inference_service_points_at_the_repository_and_keeps_the_queue_time_hpa():
    isvc = _load(KSERVE / "inferenceservice.yaml")
    model = isvc["spec"]["predictor"]["model"]
    claim = _by_kind(K8S)["Deployment"]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert model["storageUri"] == f"pvc://{claim}/"  # the same exported repository as deploy/k8s
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["runtimeVersion"].endswith("-pyt-python-py3") and "--model-control-mode=explicit" in model["args"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    assert "../k8s/autoscaling" in kustomization["resources"]
    (patch,) = kustomization["patches"]
    hpa = _load(K8S / "autoscaling" / "hpa.yaml")
    assert patch["target"]["name"] == hpa["metadata"]["name"] and patch["target"]["kind"] == hpa["kind"]
    patched = _apply_kustomize_replace(hpa, patch["patch"])
    assert patched["spec"]["scaleTargetRef"]["name"] == f"{isvc['metadata']['name']}-predictor"  # KServe's name
    assert validate_resource(patched) == []
    monitor = _load(KSERVE / "podmonitor.yaml")
    assert monitor["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 8002


def test_triton_helm_values_serve_the_exported_repository_under_the_hpa_target():
    values = _load(HELM / "triton-values.yaml")
    assert values["fullnameOverride"] == _load(K8S / "autoscaling" / "hpa.yaml")["spec"]["scaleTargetRef"]["name"]
    assert values["tags"]["autoscaling"] is False  # the chart's HPA is autoscaling/v2beta2
    assert "--model-repository=/models" in values["serverArgs"]  # where the chart mounts the NFS export
    assert "--model-control-mode=explicit" in values["serverArgs"]
    assert values["image"]["imageName"].endswith("-pyt-python-py3")


def test_kustomizations_name_existing_files(tmp_path):
    for folder in (K8S, K8S / "autoscaling", KSERVE):
        assert validate.validate_file(folder / "kustomization.yaml") == []
    broken = tmp_path / "kustomization.yaml"
    broken.write_text("resources: [missing.yaml]\n")
    assert "missing.yaml is neither a file nor a kustomization" in str(validate.validate_file(broken)[0])
