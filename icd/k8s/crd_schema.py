"""A CustomResourceDefinition's OpenAPI v3 schema as a JSON Schema that validates like ``kubectl --validate=strict``.

Kubernetes rejects unknown fields of a structural schema (strict field validation, the default of ``kubectl
apply`` since 1.27). JSON Schema allows them unless told: every object schema with ``properties`` and no
``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields`` gets ``additionalProperties: false``;
``nullable: true`` admits null. Descriptions are dropped (the vendored files stay small).

Vendor a CRD (what ``deploy/schemas/README.md`` records for each file)::

    python -m icd.k8s.crd_schema CRD.yaml VERSION deploy/schemas/<group>_<plural>.<version>.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict_schema(node: Any) -> Any:
    """Copy of an OpenAPI v3 schema node made strict (see module docstring)."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items() if key != "description"}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def schema_from_crd(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The strict JSON Schema of ``version`` of a CRD document.

    Raises:
        ValueError: the CRD has no such version or no schema for it.
    """
    for entry in crd.get("spec", {}).get("versions", []):
        if entry.get("name") == version:
            schema = entry.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                raise ValueError(f"CRD {crd.get('metadata', {}).get('name')}: version {version} has no schema")
            return strict_schema(schema)
    raise ValueError(f"CRD {crd.get('metadata', {}).get('name')}: no version {version!r}")


def main(argv: list[str]) -> int:
    source, version, target = argv
    crd = yaml.safe_load(Path(source).read_text())
    Path(target).write_bytes(gzip.compress(json.dumps(schema_from_crd(crd, version), sort_keys=True,
                                                      separators=(",", ":")).encode(), mtime=0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
