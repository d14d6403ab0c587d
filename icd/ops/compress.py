"""Correlation-matrix compression (``icd compress`` / scripts/compress_correlations.py).

What the files hold: a run's ``correlation_matrix.npz`` stores each dimension's co-access graph as upper-triangle
COO groups ``graph/<dim>/row|col|data|shape`` — already sparse (the graph stage keeps a few % of the pairs) —
and older or hand-made files may hold dense ``<dim>`` n×n arrays.

Method (docs/operations.md): ``--compression-ratio r`` is the share of a matrix's ``n(n−1)/2`` off-diagonal
pairs that may be kept. Each matrix keeps its ``min(stored, r·n(n−1)/2)`` largest-|w| entries as COO with
float16 values and the narrowest integer index type (uint16 below 65,536 channels): a COO graph stays under
its own keys, a dense matrix becomes ``sparse/<dim>/row|col|data|shape``. :func:`load_correlations` gives
every matrix back dense. A graph already sparser than ``r`` keeps every entry (only re-encoded). Other arrays
are kept; the file is written with ``np.savez_compressed``.

Validation (``--validate-accuracy``): the question is whether a permutation solved from the compressed matrix
is as good as one solved from the original. Both are solved with the locality solver's spectral ordering from
the same seeded shuffle of the channels (refinement is left out: it is time-bounded, so its result would depend
on the machine's load), and scored on the *original* matrix: ``ratio = J(π_original) / J(π_compressed)``
(1.0 = as good; ``J`` the locality cost). A matrix below ``--min-objective-ratio`` (0.99) is retried keeping
2×, 4×, ... the entries, up to all of them; with ``--escalate`` (default) it is stored at the first share that
passes, and the report says which matrices needed more than ``r``; with ``--no-escalate`` the file is restored
and the report says, per failing matrix, the share that would pass. A matrix that fails even with every entry
(float16 rounding) is stored unchanged.

Measured (``bench/results/compress_guide.json``, deterministic figures): on the MiniLM run of configs/bert.json
(25 graphs, stored density 1.6–5.8 % of pairs) and on a base-size shape (configs/bert_base.json, 49 graphs,
0.8–3.7 %), at r = 0.1 every hidden / FFN / qk / vo graph keeps all its entries (ratio 0.9999–1.0006) and only
the complete 12×12 ``heads`` graphs need more than r (6 of 6 and 7 of 12). Dropping stored entries of these
already-sparse graphs costs a lot: keeping 40 % of the stored FFN entries gave 0.40–0.57 (MiniLM) and 0.75–0.87
(base); the previous method, a rank ≈ r·n eigen-reconstruction, 0.74–0.96 and 0.87–0.90.

Safety: validation runs before anything is written; the compressed file replaces the original atomically;
without validation the original is kept as ``.<file>.bak`` (a dot file, outside the checksum manifest) until
someone validates. A ``checksums.sha256`` in the same folder is rewritten to match.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
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
"""Low-rank factors written by earlier versions (still read)."""
SPARSE_PREFIX = "sparse/"
"""A dense matrix stored as top-|w| COO by this module."""
GRAPH_PREFIX = "graph/"
DEFAULT_MIN_RATIO = 0.99
VALIDATION_SEED = 0


class CompressStatus(str, Enum):
    """Outcome for one file."""

    VALIDATED = "compressed, validated, backup removed"
    """Every matrix passed validation (some possibly keeping more than the asked share: see the report)."""
    UNVALIDATED = "compressed, not validated, backup kept"
    """No validation asked: the backup stays until someone validates."""
    RESTORED = "validation failed, original kept"
    """``--no-escalate`` and at least one matrix fell below the threshold at the asked share: nothing written."""
    NOTHING = "no correlation matrix found, unchanged"
    """The file held no square matrix."""


@dataclass
class MatrixReport:
    """One matrix: what was kept and how good a permutation solved from it is.

    Attributes:
        name: ``graph/<dim>`` or ``<dim>``.
        size: n (channels).
        stored: off-diagonal entries stored before (upper triangle).
        kept: entries kept.
        share: ``kept / (n(n−1)/2)``.
        ratio: validation objective ratio at the kept share (None without validation).
        asked_ratio: validation ratio at the asked share (differs from ``ratio`` when it escalated).
        passing_share: smallest tried share that passes (None: none did, or no validation).
    """

    name: str
    size: int
    stored: int
    kept: int
    share: float
    ratio: float | None = None
    asked_ratio: float | None = None
    passing_share: float | None = None

    @property
    def escalated(self) -> bool:
        return self.asked_ratio is not None and self.ratio is not None and self.ratio != self.asked_ratio

    def line(self, min_ratio: float) -> str:
        head = f"  {self.name}: n={self.size}, kept {self.kept}/{self.stored} entries ({self.share:.1%} of pairs)"
        if self.ratio is None:
            return head
        text = f"{head}, objective ratio {self.ratio:.4f}"
        if self.escalated:
            text += (f" (at the asked share: {self.asked_ratio:.4f} < {min_ratio}; kept more)")
        if self.asked_ratio is not None and self.asked_ratio < min_ratio and self.passing_share is None:
            text += "; no share passes: stored unchanged"
        return text


@dataclass
class CompressResult:
    path: Path
    bytes_before: int
    bytes_after: int
    status: CompressStatus
    ratios: dict[str, float] = field(default_factory=dict)
    matrices: list[MatrixReport] = field(default_factory=list)

    @property
    def worst_ratio(self) -> float | None:
        return min(self.ratios.values()) if self.ratios else None

    @property
    def failed(self) -> bool:
        return self.status == CompressStatus.RESTORED


def _upper_entries(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    upper = np.triu((dense + dense.T) / 2.0, 1)
    row, col = np.nonzero(upper)
    return row, col, upper[row, col]


def keep_count(size: int, stored: int, share: float) -> int:
    """Entries kept at ``share`` of the ``n(n−1)/2`` pairs (never more than stored, at least one)."""
    return max(1, min(stored, int(np.ceil(share * size * (size - 1) / 2))))


def _index_dtype(size: int) -> np.dtype:
    return np.dtype(np.uint16) if size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def top_entries(dense: np.ndarray, keep: int) -> dict[str, np.ndarray]:
    """The ``keep`` largest-|w| upper-triangle entries as ``row``, ``col`` (narrow ints), ``data`` (float16),
    ``shape``."""
    row, col, data = _upper_entries(dense)
    order = np.argsort(-np.abs(data), kind="stable")[:keep]
    order = order[np.lexsort((col[order], row[order]))]
    index = _index_dtype(dense.shape[0])
    return {"row": row[order].astype(index), "col": col[order].astype(index),
            "data": data[order].astype(np.float16), "shape": np.array(dense.shape, dtype=np.int64)}


def coo_dense(row: np.ndarray, col: np.ndarray, data: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Symmetric dense float64 matrix of upper-triangle COO entries."""
    size = tuple(int(v) for v in shape)
    upper = sp.coo_matrix((data.astype(np.float64), (row.astype(np.int64), col.astype(np.int64))),
                          shape=size).toarray()
    return upper + upper.T


def reconstruct(values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The dense matrix of (older files') low-rank factors (float32)."""
    v = vectors.astype(np.float32)
    return (v * values.astype(np.float32)) @ v.T


def load_correlations(path: Path) -> dict[str, np.ndarray]:
    """Every matrix of a (possibly compressed) ``correlation_matrix.npz`` as dense float32: ``graph/<dim>``,
    ``<dim>`` (from ``sparse/`` or ``lowrank/`` groups too); other arrays as stored."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    out = {k: v for k, v in arrays.items() if not k.startswith((LOWRANK_PREFIX, SPARSE_PREFIX))}
    for name, (dense, _) in _matrices(arrays).items():
        out[name.removeprefix(SPARSE_PREFIX)] = dense.astype(np.float32)
    for key in arrays:
        if key.startswith(LOWRANK_PREFIX) and key.endswith("/values"):
            name = key[len(LOWRANK_PREFIX):-len("/values")]
            out[name] = reconstruct(arrays[key], arrays[f"{LOWRANK_PREFIX}{name}/vectors"])
    return out


def _matrices(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Square matrices found: name → (dense symmetric float64, the npz keys it came from)."""
    out = {}
    for name, arr in arrays.items():
        if name.startswith(LOWRANK_PREFIX):
            continue
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and arr.shape[0] > 1 and np.issubdtype(arr.dtype, np.floating):
            out[name] = (arr.astype(np.float64), [name])
        elif name.endswith("/row") and name.startswith((GRAPH_PREFIX, SPARSE_PREFIX)):
            prefix = name[: -len("/row")]
            keys = [f"{prefix}/{k}" for k in ("row", "col", "data", "shape")]
            if all(k in arrays for k in keys):
                out[prefix] = (coo_dense(*(arrays[k] for k in keys)), keys)
    return out


def _graph(dense: np.ndarray) -> sp.csr_matrix:
    """Non-negative symmetric graph without diagonal (what the locality solver takes)."""
    graph = np.abs((dense + dense.T) / 2.0)
    np.fill_diagonal(graph, 0.0)
    return sp.csr_matrix(graph)


def objective_ratio(original: np.ndarray, compressed: np.ndarray, seed: int = VALIDATION_SEED) -> float:
    """``J(π_original) / J(π_compressed)`` on the original matrix, both solved (spectral, no refinement) from the
    same seeded shuffle of the channels; 1.0 = the compressed matrix leads to an equally good permutation."""
    from icd.solver.locality import locality_cost
    from icd.solver.solve import solve_locality

    shuffle = np.random.default_rng(seed).permutation(original.shape[0])
    sym = _graph(original[np.ix_(shuffle, shuffle)])
    small = _graph(compressed[np.ix_(shuffle, shuffle)])
    cost_o = locality_cost(sym, solve_locality(sym, refine=False, seed=seed).perm)
    cost_c = locality_cost(sym, solve_locality(small, refine=False, seed=seed).perm)
    if cost_c <= 0:
        return 1.0
    return float(cost_o / cost_c)


def share_ladder(share: float) -> list[float]:
    """The shares tried for one matrix: ``share``, 2×, 4×, ... then 1.0."""
    ladder = [share]
    while ladder[-1] < 1.0:
        ladder.append(min(1.0, ladder[-1] * 2))
    return ladder


@dataclass
class _Choice:
    entries: dict[str, np.ndarray] | None  # None: store unchanged
    report: MatrixReport


def _choose(name: str, dense: np.ndarray, share: float, validate: bool, min_ratio: float, escalate: bool,
            score: Callable[[np.ndarray, np.ndarray], float]) -> _Choice:
    size = dense.shape[0]
    stored = int(np.count_nonzero(_upper_entries(dense)[2]))
    pairs = size * (size - 1) / 2

    def at(s: float) -> tuple[dict[str, np.ndarray], int]:
        keep = keep_count(size, max(stored, 1), s)
        return top_entries(dense, keep), keep

    entries, keep = at(share)
    report = MatrixReport(name, size, stored, keep, keep / pairs)
    if not validate:
        return _Choice(entries, report)
    report.asked_ratio = report.ratio = score(dense, coo_dense(**entries))
    if report.ratio >= min_ratio:
        report.passing_share = share
        return _Choice(entries, report)
    tried_keep = keep
    for step in share_ladder(share)[1:]:
        candidate, count = at(step)
        if count == tried_keep:
            continue
        tried_keep = count
        ratio = score(dense, coo_dense(**candidate))
        if ratio >= min_ratio:
            report.passing_share = step
            if escalate:
                report.ratio, report.kept, report.share = ratio, count, count / pairs
                return _Choice(candidate, report)
            return _Choice(entries, report)
    if escalate:
        report.ratio, report.kept, report.share = 1.0, stored, stored / pairs
        return _Choice(None, report)
    return _Choice(entries, report)


def backup_path(path: Path) -> Path:
    """``.<name>.bak`` next to ``path`` (a dot file: outside the checksum manifest, so the folder still verifies)."""
    return path.with_name(f".{path.name}{BACKUP_SUFFIX}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path, "wb", encoding=None) as handle:
        np.savez_compressed(handle, **arrays)


def _refresh_manifest(folder: Path) -> None:
    from icd.io.atomic import write_text_atomic
    from icd.serve.backend.icd_runtime import MANIFEST_NAME, manifest_text

    if (folder / MANIFEST_NAME).is_file():
        write_text_atomic(folder / MANIFEST_NAME, manifest_text(folder))


def compress_arrays(arrays: dict[str, np.ndarray], ratio: float, validate: bool = False,
                    min_ratio: float = DEFAULT_MIN_RATIO, escalate: bool = True,
                    score: Callable[[np.ndarray, np.ndarray], float] = objective_ratio,
                    ) -> tuple[dict[str, np.ndarray], list[MatrixReport]]:
    """Compressed copy of the npz arrays and a report per matrix (see module docstring)."""
    out = dict(arrays)
    reports = []
    for name, (dense, keys) in _matrices(arrays).items():
        choice = _choose(name, dense, ratio, validate, min_ratio, escalate, score)
        reports.append(choice.report)
        if choice.entries is None:
            continue
        prefix = name if name.startswith((GRAPH_PREFIX, SPARSE_PREFIX)) else f"{SPARSE_PREFIX}{name}"
        for key in keys:
            out.pop(key)
        out.update({f"{prefix}/{part}": value for part, value in choice.entries.items()})
    return out, reports


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``.

    Raises:
        ArtefactError: not a readable ``.npz`` (truncated, empty, not a zip, unreadable), naming the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:  # EOFError: an empty file
        raise ArtefactError(f"{path}: not a readable .npz ({exc or 'empty file'})") from None


def compress_file(path: Path, ratio: float, validate: bool, min_ratio: float = DEFAULT_MIN_RATIO,
                  escalate: bool = True) -> CompressResult:
    """Compress one ``correlation_matrix.npz`` in place (see module docstring)."""
    path = Path(path)
    before = path.stat().st_size
    arrays = read_npz(path)
    out, reports = compress_arrays(arrays, ratio, validate, min_ratio, escalate)
    if not reports:
        return CompressResult(path, before, before, CompressStatus.NOTHING)
    ratios = {r.name: r.ratio for r in reports if r.ratio is not None}
    if validate and any(r.ratio is not None and r.ratio < min_ratio for r in reports):
        return CompressResult(path, before, before, CompressStatus.RESTORED, ratios, reports)
    if not validate:
        shutil.copy2(path, backup_path(path))
    _write_npz(path, out)
    _refresh_manifest(path.parent)
    status = CompressStatus.VALIDATED if validate else CompressStatus.UNVALIDATED
    return CompressResult(path, before, path.stat().st_size, status, ratios, reports)


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
                  escalate: bool = True) -> list[CompressResult]:
    """Compress every correlation file under ``root``."""
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"--compression-ratio: must be in (0, 1], got {ratio}")
    if not 0.0 < min_ratio <= 1.0:
        raise UserError(f"--min-objective-ratio: must be in (0, 1], got {min_ratio}")
    files = find_correlation_files(root)
    for path in files:  # every file readable before any is rewritten: a bad one leaves the tree as it was
        read_npz(path)
    return [compress_file(p, ratio, validate, min_ratio, escalate) for p in files]
