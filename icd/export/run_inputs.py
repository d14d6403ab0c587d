"""Read and check what an export takes from a run directory (layout: docs/architecture.md, "Run directory").

Every problem is an :class:`icd.errors.ArtefactError` / :class:`ConfigError` with one line naming the file.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from icd.errors import ArtefactError, ConfigError
from icd.io.json_artefact import read_json_artefact

CONFIG_LOCK = "config.lock.json"
RUN_JSON = "run.json"
PERMUTATION_FILE = "permutation.json"
CORRELATION_FILE = "correlation_matrix.npz"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"


@dataclass(frozen=True)
class RunInputs:
    """The artefacts of one run that an export uses.

    Attributes:
        run_dir: the run directory.
        config_lock: ``config.lock.json`` as a dict (validated as an ``IcdConfig``).
        run_meta: ``run.json`` if present.
        permutations: ``{dim name: permutation}`` read from permutation.json (empty for a baseline export).
        permutation_path: permutation.json (None for a baseline export).
        correlation_path: correlation_matrix.npz (None for a baseline export when absent).
    """

    run_dir: Path
    config_lock: dict[str, Any]
    run_meta: dict[str, Any] | None
    permutations: dict[str, np.ndarray]
    permutation_path: Path | None
    correlation_path: Path | None

    @property
    def model_dir(self) -> Path:
        return self.run_dir / MODEL_DIR


def _read_json(path: Path) -> Any:
    return read_json_artefact(path)


def read_config_lock(run_dir: Path) -> dict[str, Any]:
    """``config.lock.json``, validated against the config schema."""
    from pydantic import ValidationError

    from icd.config.schema import IcdConfig

    path = run_dir / CONFIG_LOCK
    doc = _read_json(path)
    try:
        IcdConfig.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    return doc


def read_permutations(path: Path) -> dict[str, np.ndarray]:
    """Every permutation of ``permutation.json`` (validated by :mod:`icd.io.permutation_file`)."""
    from icd.io.permutation_file import read_permutation_file

    if not path.is_file():
        raise ArtefactError(f"missing artefact: {path}")
    return read_permutation_file(path)


def check_npz(path: Path) -> None:
    """``path`` is a readable ``.npz`` with at least one array."""
    if not path.is_file():
        raise ArtefactError(f"missing artefact: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not data.files:
                raise ArtefactError(f"{path}: no arrays")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:  # EOFError: an empty file
        raise ArtefactError(f"{path}: not a readable .npz ({exc or 'empty file'})") from None


def read_run(run_dir: Path, baseline: bool = False) -> RunInputs:
    """Check ``run_dir`` and read what an export needs.

    Args:
        run_dir: a run directory (``icd run --out``).
        baseline: only ``config.lock.json`` is needed (the baseline is rebuilt from it).

    Raises:
        ArtefactError: the directory or an artefact is missing or invalid, or the run is not complete.
        ConfigError: config.lock.json does not validate.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtefactError(f"run directory not found: {run_dir}")
    run_meta = _read_json(run_dir / RUN_JSON) if (run_dir / RUN_JSON).exists() else None
    if run_meta is not None and not isinstance(run_meta, dict):
        raise ArtefactError(f"{run_dir / RUN_JSON}: expected a JSON object, got {type(run_meta).__name__}")
    if run_meta is not None and run_meta.get("status", "complete") != "complete":
        raise ArtefactError(f"{run_dir / RUN_JSON}: run status is {run_meta.get('status')!r}, not 'complete'")
    config_lock = read_config_lock(run_dir)
    if baseline:
        # The baseline needs neither; when present they give the identity layout's efficiency (for comparison).
        corr = run_dir / CORRELATION_FILE
        perm_path = run_dir / PERMUTATION_FILE
        perms = read_permutations(perm_path) if perm_path.is_file() else {}
        return RunInputs(run_dir, config_lock, run_meta, perms, None, corr if corr.is_file() else None)
    if not (run_dir / MODEL_DIR).is_dir():
        raise ArtefactError(f"missing artefact: {run_dir / MODEL_DIR} (the optimized model)")
    permutations = read_permutations(run_dir / PERMUTATION_FILE)
    check_npz(run_dir / CORRELATION_FILE)
    return RunInputs(
        run_dir, config_lock, run_meta, permutations, run_dir / PERMUTATION_FILE, run_dir / CORRELATION_FILE
    )
