"""Correlation-matrix compression (``icd compress`` / scripts/compress_correlations.py).

Method (documented in docs/operations.md): every square correlation matrix in a ``correlation_matrix.npz``
(dense ``<dim>`` n×n arrays, or upper-triangle COO groups ``graph/<dim>/row|col|data|shape``) is replaced by its
low-rank factors: the ``r`` eigenpairs largest in |eigenvalue|, vectors stored as float16, with ``r`` chosen so
the factors hold at most ``ratio`` of the n² dense values (``r ≈ ratio·n``). Keys: ``lowrank/<dim>/values``
(r, float32) and ``lowrank/<dim>/vectors`` (n×r, float16); :func:`load_correlations` reconstructs
``V·diag(w)·Vᵀ``. Other arrays are kept; the file is written with ``np.savez_compressed``. (While choosing the
method, on a synthetic block-structured 384×384 |corrcoef| matrix at ratio 0.1: global top-k kept 0.93 of the
objective, per-row top-k 0.98, low rank 1.01 — the solver's own run-to-run spread is about ±1%.)

Safety: the original is copied to ``.<file>.bak`` first; the compressed file replaces it; with validation, a
matrix whose permutation solved from the compressed matrix reaches less than ``min_ratio`` of the objective
reached from the original restores the backup. The backup is deleted only after validation passes (kept when
validation is not asked for). A ``checksums.sha256`` in the same folder is rewritten to match.

Objective (validation): the locality-cost improvement over the identity order, on the *original* matrix:
``ratio = (cost(id) − cost(perm_compressed)) / (cost(id) − cost(perm_original))`` (1.0 when the original solve
gains nothing and the compressed one loses nothing).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from icd.errors import ArtefactError, UserError
from icd.io.atomic import atomic_open

CORRELATION_FILE = "correlation_matrix.npz"
BACKUP_SUFFIX = ".bak"
LOWRANK_PREFIX = "lowrank/"
DEFAULT_MIN_RATIO = 0.99


class CompressStatus(str, Enum):
    """Outcome for one file."""

    VALIDATED = "compressed, validated, backup removed"
    """Every matrix passed validation."""
    UNVALIDATED = "compressed, not validated, backup kept"
    """No validation asked: the backup stays until someone validates."""
    RESTORED = "validation failed, original restored"
    """At least one matrix fell below the threshold."""
    NOTHING = "no correlation matrix found, unchanged"
    """The file held no square matrix."""


@dataclass
class CompressResult:
    path: Path
    bytes_before: int
    bytes_after: int
    status: CompressStatus
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def worst_ratio(self) -> float | None:
        return min(self.ratios.values()) if self.ratios else None

    @property
    def failed(self) -> bool:
        return self.status == CompressStatus.RESTORED


def rank_for(n: int, ratio: float) -> int:
    """Rank whose factors (n×r vectors + r values) take at most ``ratio`` of the n² dense values."""
    return max(1, min(n, int(ratio * n * n // (n + 1))))


def low_rank(dense: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``rank`` eigenpairs of the symmetrised matrix largest in |eigenvalue|: (values float32, vectors float16)."""
    sym = (dense + dense.T) / 2.0
    values, vectors = np.linalg.eigh(sym.astype(np.float64))
    top = np.argsort(-np.abs(values), kind="stable")[:rank]
    return values[top].astype(np.float32), vectors[:, top].astype(np.float16)


def reconstruct(values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The dense matrix of low-rank factors (float32)."""
    v = vectors.astype(np.float32)
    return (v * values.astype(np.float32)) @ v.T


def load_correlations(path: Path) -> dict[str, np.ndarray]:
    """Every correlation matrix of a (possibly compressed) ``correlation_matrix.npz`` as dense float32 arrays
    (low-rank groups reconstructed); other arrays as stored."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    out = {k: v for k, v in arrays.items() if not k.startswith(LOWRANK_PREFIX)}
    for key in arrays:
        if key.startswith(LOWRANK_PREFIX) and key.endswith("/values"):
            name = key[len(LOWRANK_PREFIX):-len("/values")]
            out[name] = reconstruct(arrays[key], arrays[f"{LOWRANK_PREFIX}{name}/vectors"])
    return out


def _matrices(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Square matrices found: name → (dense float64, the npz keys it came from)."""
    out = {}
    for name, arr in arrays.items():
        if name.startswith(LOWRANK_PREFIX):
            continue
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] > 1 and np.issubdtype(arr.dtype, np.floating):
            out[name] = (arr.astype(np.float64), [name])
        elif name.startswith("graph/") and name.endswith("/row"):
            prefix = name[: -len("/row")]
            keys = [f"{prefix}/{k}" for k in ("row", "col", "data", "shape")]
            if all(k in arrays for k in keys):
                shape = tuple(int(v) for v in arrays[f"{prefix}/shape"])
                coo = sp.coo_matrix((arrays[f"{prefix}/data"].astype(np.float64),
                                     (arrays[f"{prefix}/row"], arrays[f"{prefix}/col"])), shape=shape)
                dense = coo.toarray()
                out[prefix] = (dense + dense.T, keys)
    return out


def compress_arrays(arrays: dict[str, np.ndarray], ratio: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Compressed copy of the npz arrays, and each compressed matrix reconstructed (dense) by name."""
    out = dict(arrays)
    reconstructed = {}
    for name, (dense, keys) in _matrices(arrays).items():
        values, vectors = low_rank(dense, rank_for(dense.shape[0], ratio))
        for key in keys:
            out.pop(key)
        out[f"{LOWRANK_PREFIX}{name}/values"] = values
        out[f"{LOWRANK_PREFIX}{name}/vectors"] = vectors
        reconstructed[name] = reconstruct(values, vectors)
    return out, reconstructed


def _graph(dense: np.ndarray) -> sp.csr_matrix:
    """Non-negative symmetric graph without diagonal (what the locality solver takes)."""
    graph = np.clip((dense + dense.T) / 2.0, 0.0, None)
    np.fill_diagonal(graph, 0.0)
    return sp.csr_matrix(graph)


def objective_ratio(original: np.ndarray, compressed: np.ndarray, time_limit_s: float) -> float:
    """Locality-cost improvement reached from ``compressed`` / reached from ``original`` (on the original)."""
    from icd.solver.locality import locality_cost
    from icd.solver.solve import solve_locality

    sym = _graph(np.abs(original))
    small = _graph(compressed)
    base = locality_cost(sym)
    perm_o = solve_locality(sym, time_limit_s=time_limit_s).perm
    perm_c = solve_locality(small, time_limit_s=time_limit_s).perm
    gain_o = base - locality_cost(sym, perm_o)
    gain_c = base - locality_cost(sym, perm_c)
    if gain_o <= 0:
        return 1.0 if gain_c >= gain_o else gain_c / max(abs(base), 1e-300) + 1.0
    return float(gain_c / gain_o)


def backup_path(path: Path) -> Path:
    """``.<name>.bak`` next to ``path`` (a dot file: outside the checksum manifest, so the folder still verifies)."""
    return path.with_name(f".{path.name}{BACKUP_SUFFIX}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb", encoding=None) as handle:
        np.savez_compressed(handle, **arrays)


def _refresh_manifest(folder: Path) -> None:
    from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text
    from icd.io.atomic import write_text_atomic

    if (folder / MANIFEST_NAME).is_file():
        write_text_atomic(folder / MANIFEST_NAME, manifest_text(folder))


def compress_file(path: Path, ratio: float, validate: bool, min_ratio: float = DEFAULT_MIN_RATIO,
                  time_limit_s: float = 2.0) -> CompressResult:
    """Compress one ``correlation_matrix.npz`` in place (see module docstring)."""
    path = Path(path)
    before = path.stat().st_size
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{path}: not a readable .npz ({exc})") from None
    out, compressed = compress_arrays(arrays, ratio)
    if not compressed:
        return CompressResult(path, before, before, CompressStatus.NOTHING)
    backup = backup_path(path)
    shutil.copy2(path, backup)
    _write_npz(path, out)
    ratios = {}
    if validate:
        originals = _matrices(arrays)
        ratios = {name: objective_ratio(originals[name][0], small, time_limit_s) for name, small in compressed.items()}
        if min(ratios.values()) < min_ratio:
            shutil.move(backup, path)
            return CompressResult(path, before, path.stat().st_size, CompressStatus.RESTORED, ratios)
        backup.unlink()
    status = CompressStatus.VALIDATED if validate else CompressStatus.UNVALIDATED
    _refresh_manifest(path.parent)
    return CompressResult(path, before, path.stat().st_size, status, ratios)


def find_correlation_files(root: Path) -> list[Path]:
    """Every ``correlation_matrix.npz`` under ``root`` (itself if it is one).

    Raises:
        UserError: ``root`` missing or holds none.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserError(f"--input-dir {root}: no such directory")
    files = sorted(root.rglob(CORRELATION_FILE))
    if not files:
        raise UserError(f"--input-dir {root}: no {CORRELATION_FILE} under it")
    return files


def compress_tree(root: Path, ratio: float, validate: bool, min_ratio: float = DEFAULT_MIN_RATIO,
                  time_limit_s: float = 2.0) -> list[CompressResult]:
    """Compress every correlation file under ``root``."""
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"--compression-ratio: must be in (0, 1], got {ratio}")
    if not 0.0 < min_ratio <= 1.0:
        raise UserError(f"--min-objective-ratio: must be in (0, 1], got {min_ratio}")
    return [compress_file(p, ratio, validate, min_ratio, time_limit_s) for p in find_correlation_files(root)]
