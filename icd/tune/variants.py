"""Runtime / precision variants of one model: its version folders, each an export on another runtime or precision.

``icd export-triton --model-name bert_icd --version 2 --runtime openvino --precision int8`` writes version 2 of
``bert_icd`` next to version 1 (torchscript fp32, say); each version folder's ``provenance.json`` records the
runtime and precision it was exported for (its ``runtime_export`` record). ``icd tune --versions 1,2`` searches
them like any other dimension: a candidate's version is loaded alone (``version_policy { specific }``) with the
``icd_runtime`` / ``icd_precision`` parameters of that version, so icd's python backend runs its artefact.
What a version costs in fidelity is what its export verified against fp32 (``provenance.json``'s
``verification``: cosine mean and nearest-neighbour agreement on held-out texts); the tune report shows it beside
the version's throughput, so a faster precision is never chosen blind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from icd.errors import ConfigError

PROVENANCE_FILE = "provenance.json"
RUNTIME_PARAMETER = "icd_runtime"
PRECISION_PARAMETER = "icd_precision"


@dataclass(frozen=True)
class Variant:
    """What one version folder runs."""

    version: int
    runtime: str
    precision: str
    cos_mean_fp32: float | None = None
    """Cosine mean against fp32 that the version's export verified (None: not recorded)."""
    nn_agreement_fp32: float | None = None
    """Nearest-neighbour agreement with fp32 that the export verified (None: not recorded)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_variant(model_dir: Path, version: int) -> Variant:
    """The runtime and precision of ``model_dir/<version>`` from its provenance.json.

    Raises:
        ConfigError: no such version folder, or no runtime_export record in its provenance.json.
    """
    folder = Path(model_dir) / str(version)
    path = folder / PROVENANCE_FILE
    if not folder.is_dir():
        raise ConfigError(f"--versions: version {version}: no folder {folder} (export it with icd export-triton "
                          f"--version {version})")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--versions: version {version}: cannot read {path} ({exc})") from None
    for record in doc.get("applied", []) if isinstance(doc, dict) else []:
        if isinstance(record, dict) and record.get("type") == "runtime_export":
            data = record.get("data", {})
            verified = doc.get("verification") if isinstance(doc.get("verification"), dict) else {}
            return Variant(version, str(data.get("runtime")), str(data.get("precision")),
                           _fraction(verified.get("cos_mean_fp32")), _fraction(verified.get("nn_agreement_fp32")))
    raise ConfigError(f"--versions: version {version}: {path} has no runtime_export record (not an icd export)")


def _fraction(value: Any) -> float | None:
    return round(float(value), 6) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_variants(repository: Path | None, model: str, versions: list[int], backend: str) -> dict[int, Variant]:
    """The variants of ``versions`` of ``model`` (empty when no versions are searched).

    Raises:
        ConfigError: versions without a readable repository, a model not served by icd's python backend, or a
            version that :func:`read_variant` refuses.
    """
    if not versions:
        return {}
    if repository is None or not (Path(repository) / model).is_dir():
        raise ConfigError(f"--versions needs the model's folder to read each version's runtime: "
                          f"--model-repository {repository} has no {model}/")
    if backend != "python":
        raise ConfigError(f"--versions: {model} is served by {backend or 'a native platform'}; versions are searched "
                          "for icd's python-backend exports (their runtime is a parameter)")
    return {v: read_variant(Path(repository) / model, v) for v in versions}


def apply_variant(config: Any, variant: Variant) -> None:
    """Serve only ``variant``'s version, on its runtime and precision (changes ``config`` in place)."""
    config.version_policy.ClearField("specific")
    config.version_policy.specific.versions.append(variant.version)
    config.parameters[RUNTIME_PARAMETER].string_value = variant.runtime
    config.parameters[PRECISION_PARAMETER].string_value = variant.precision
