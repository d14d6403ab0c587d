"""Read and write :data:`icd.runtimes.base.RUNTIME_FILE` (``icd_runtime.json``) in a version folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError
from icd.io.atomic import write_json_atomic
from icd.runtimes.base import RUNTIME_FILE, ExportedArtefact, Precision, Variant


@dataclass(frozen=True)
class Sidecar:
    """How a version folder's artefact is loaded."""

    variant: Variant
    files: tuple[str, ...]
    properties: dict[str, str]
    recipe: dict[str, Any]


def write_sidecar(folder: Path, artefact: ExportedArtefact) -> ExportedArtefact:
    """Write ``artefact``'s :data:`RUNTIME_FILE` into ``folder``; returns ``artefact``."""
    write_json_atomic(Path(folder) / RUNTIME_FILE, artefact.sidecar())
    return artefact


def read_sidecar(folder: Path, default_runtime: str = "torchscript") -> Sidecar:
    """The folder's sidecar; a folder exported before runtimes existed is TorchScript fp32 / its own precision.

    Raises:
        ArtefactError: the sidecar is not valid JSON or names an unknown precision.
    """
    path = Path(folder) / RUNTIME_FILE
    if not path.is_file():
        return Sidecar(Variant(default_runtime, Precision.FP32), ("model.pt",), {}, {})
    try:
        doc = json.loads(path.read_text())
        variant = Variant(str(doc["runtime"]), Precision(doc["precision"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtefactError(f"{path}: not a valid runtime record ({exc})") from None
    return Sidecar(variant, tuple(doc.get("files", [])), dict(doc.get("properties", {})), dict(doc.get("recipe", {})))
