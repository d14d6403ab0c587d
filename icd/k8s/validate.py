"""Offline validation of icd's Kubernetes manifests and Helm values files.

* Core kinds (Deployment, Service, HorizontalPodAutoscaler, ConfigMap, PodDisruptionBudget, ...) are validated
  with kubernetes-validate in strict mode (unknown fields are errors) against every version in
  :data:`KUBERNETES_VERSIONS`.
* CRD kinds are validated against their vendored schemas (``deploy/schemas/*.json.gz``, made strict by
  :mod:`icd.k8s.crd_schema`; provenance in ``deploy/schemas/README.md``). A kind with no schema is an error:
  nothing passes unvalidated.
* Helm values files (``*-values.yaml``) are validated against the JSON Schema named in :data:`VALUES_SCHEMAS`
  (what the chart's templates read: the charts themselves are not rendered here, there is no helm binary).
* ``kustomization.yaml`` files are checked structurally: every resource and patch they name exists.

Each problem is one :class:`Finding` naming the file, the resource and the field path.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

KUBERNETES_VERSIONS = ("1.30", "1.37")
"""Oldest and newest Kubernetes the manifests are validated against."""
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
SCHEMA_DIR = DEPLOY_DIR / "schemas"
DEFAULT_PATHS = (DEPLOY_DIR / "k8s", DEPLOY_DIR / "kserve", DEPLOY_DIR / "helm")
CRD_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.v1beta1.json.gz",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.v1.json.gz",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.v1.json.gz",
}
VALUES_SCHEMAS = {
    "triton-values.yaml": "triton-k8s-onprem-values.schema.json",
    "prometheus-adapter-values.yaml": "prometheus-adapter-values.schema.json",
}
KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class Finding:
    """One problem: where, which resource, what."""

    path: Path
    resource: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.resource}: {self.message}"


@cache
def _load_schema(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / name
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if name.endswith(".gz") else data)


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _jsonschema_errors(doc: Any, schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    return [f"{_where(e)}: {e.message}" for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))]


def validate_resource(doc: Any) -> list[str]:
    """Problems of one manifest document (empty when valid)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not isinstance(doc.get("apiVersion"), str):
        return ["not a Kubernetes resource (needs apiVersion and kind)"]
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        problems = _jsonschema_errors(doc, _load_schema(CRD_SCHEMAS[key]))
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            problems.append("metadata.name: required string")
        return problems
    import kubernetes_validate

    versions_of: dict[str, list[str]] = {}  # one line per problem, naming every version it shows in
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # the first problem (fix it, then check again)
            versions_of.setdefault(f"{_where(exc)}: {exc.message}", []).append(version)
        except kubernetes_validate.SchemaNotFoundError:
            versions_of.setdefault(f"no schema for {doc['kind']} {doc['apiVersion']} (a CRD needs its schema "
                                   "in deploy/schemas/)", []).append(version)
    return [f"{problem} (Kubernetes {', '.join(versions)})" for problem, versions in versions_of.items()]


def _resource_name(doc: Any) -> str:
    if isinstance(doc, dict):
        return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
    return "?"


def _documents(path: Path) -> tuple[list[Any], list[Finding]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        return [], [Finding(path, "(file)", f"invalid YAML: {exc}")]
    except OSError as exc:
        return [], [Finding(path, "(file)", f"cannot read: {exc.strerror}")]
    return docs, []


def _check_kustomization(path: Path, doc: Any) -> list[Finding]:
    if not isinstance(doc, dict):
        return [Finding(path, "Kustomization", "not a mapping")]
    findings = []
    for ref in doc.get("resources", []):
        target = path.parent / ref
        if not (target.is_file() or (target / KUSTOMIZATION).is_file()):
            findings.append(Finding(path, "Kustomization", f"resources: {ref} is neither a file nor a kustomization"))
    for patch in doc.get("patches", []):
        ref = patch.get("path") if isinstance(patch, dict) else None
        if ref is not None and not (path.parent / ref).is_file():
            findings.append(Finding(path, "Kustomization", f"patches: {ref} does not exist"))
    return findings


def validate_file(path: Path) -> list[Finding]:
    """Problems of one YAML file: a kustomization, a Helm values file or manifests."""
    path = Path(path)
    docs, findings = _documents(path)
    return findings or validate_documents(path, docs)


def validate_documents(path: Path, docs: list[Any]) -> list[Finding]:
    """Problems of the documents of a file named ``path`` (its name picks the kind of check)."""
    if path.name == KUSTOMIZATION:
        return [f for doc in docs for f in _check_kustomization(path, doc)]
    if path.name in VALUES_SCHEMAS:
        schema = _load_schema(VALUES_SCHEMAS[path.name])
        return [Finding(path, "Helm values", problem) for doc in docs for problem in _jsonschema_errors(doc, schema)]
    if path.name.endswith("-values.yaml"):
        return [Finding(path, "Helm values", f"no values schema for {path.name} (known: {sorted(VALUES_SCHEMAS)})")]
    return [Finding(path, _resource_name(doc), problem) for doc in docs for problem in validate_resource(doc)]


def yaml_files(paths: list[Path] | tuple[Path, ...]) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` under ``paths`` (files as given), sorted."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
        else:
            out.append(path)
    return out


def validate_paths(paths: list[Path] | tuple[Path, ...] = DEFAULT_PATHS) -> tuple[list[Path], list[Finding]]:
    """The files checked and every problem found in them."""
    files = yaml_files(paths)
    return files, [finding for path in files for finding in validate_file(path)]
