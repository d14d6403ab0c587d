"""``permutation.json``: the permutation of every permutable dimension of a run (schema in
docs/permutation_schema.md). Written atomically; read back with full validation."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icd.errors import ArtefactError
from icd.io.atomic import write_json_atomic
from icd.model.layout import Dim, permutation_problem

SCHEMA = "icd.permutation/v1"
_DIM_FIELDS = ("name", "kind", "size", "block", "perm", "sha256")


def perm_sha256(perm: np.ndarray | Sequence[int]) -> str:
    """sha256 (hex) of the permutation as little-endian int64 bytes."""
    return hashlib.sha256(np.asarray(perm, dtype="<i8").tobytes()).hexdigest()


def permutation_entry(dim: Dim, perm: np.ndarray, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One ``dims[]`` entry. ``details`` may add ``cost_before``, ``cost_after``, ``solver`` (and more)."""
    array = np.asarray(perm, dtype=np.int64)
    problem = permutation_problem(array, dim.size, dim.block)
    if problem:
        raise ValueError(f"dim {dim.name!r}: permutation {problem}")
    entry: dict[str, Any] = {
        "name": dim.name,
        "kind": dim.kind.value,
        "size": dim.size,
        "block": dim.block,
        "perm": array.tolist(),
        "sha256": perm_sha256(array),
        "cost_before": None,
        "cost_after": None,
        "solver": {},
    }
    entry.update(details or {})
    return entry


def write_permutation_file(
    path: str | os.PathLike[str],
    dims: Sequence[Dim],
    perms: Mapping[str, np.ndarray],
    *,
    model: Mapping[str, Any],
    details: Mapping[str, Mapping[str, Any]] | None = None,
    output_basis_perm: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write permutation.json atomically and return the document.

    Args:
        path: target file.
        dims: the dims to record (in this order); a dim missing from ``perms`` is recorded as the identity.
        perms: dim name → permutation (``new = old[perm]``).
        model: what the permutations apply to (e.g. the model config section, layer / size numbers).
        details: per dim name, extra entry fields: ``cost_before``, ``cost_after``, ``solver`` ({name, seed,
            seconds, ...}).
        output_basis_perm: the dim whose permutation the model's raw output is in (``"hidden"`` for an
            embedding model whose output was left in the permuted basis), else ``None``.
        extra: more top-level fields (e.g. ``"applied_in": "original"``).

    Raises:
        ValueError: a permutation in ``perms`` is invalid for its dim, or names a dim not in ``dims``.
    """
    known = {dim.name for dim in dims}
    unknown = sorted(set(perms) - known)
    if unknown:
        raise ValueError(f"permutations for unknown dims: {unknown}")
    details = details or {}
    entries = [
        permutation_entry(dim, perms[dim.name] if dim.name in perms else np.arange(dim.size), details.get(dim.name))
        for dim in dims
    ]
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "model": dict(model),
        "convention": "new channel j is old channel perm[j] (new = old[perm])",
        "output_basis_perm": output_basis_perm,
        "dims": entries,
    }
    document.update(extra or {})
    write_json_atomic(path, document)
    return document


def _fail(path: Path, message: str) -> ArtefactError:
    return ArtefactError(f"{path}: {message}")


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise _fail(path, "permutation file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read ({exc})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(document, dict):
        raise _fail(path, "top level must be a JSON object")
    if document.get("schema") != SCHEMA:
        raise _fail(path, f"schema: expected {SCHEMA!r}, got {document.get('schema')!r}")
    if not isinstance(document.get("dims"), list):
        raise _fail(path, "dims: expected a list")
    return document


def _entry_perm(path: Path, index: int, entry: Any) -> tuple[str, np.ndarray, int, int | None, str]:
    if not isinstance(entry, dict):
        raise _fail(path, f"dims[{index}]: expected an object")
    missing = [key for key in _DIM_FIELDS if key not in entry]
    name = entry.get("name", f"dims[{index}]")
    if missing:
        raise _fail(path, f"dim {name!r}: missing field(s) {', '.join(missing)}")
    raw, size, block = entry["perm"], entry["size"], entry["block"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise _fail(path, f"dim {name!r}: size must be a positive integer, got {size!r}")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool) or block < 1):
        raise _fail(path, f"dim {name!r}: block must be null or a positive integer, got {block!r}")
    if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise _fail(path, f"dim {name!r}: perm must be a list of integers")
    return str(name), np.asarray(raw, dtype=np.int64), size, block, str(entry["sha256"])


def read_permutation_document(
    path: str | os.PathLike[str], expected_dims: Sequence[Dim] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The validated document and its permutations (see :func:`read_permutation_file`)."""
    path = Path(path)
    document = _load(path)
    expected = {dim.name: dim for dim in expected_dims} if expected_dims is not None else None
    perms: dict[str, np.ndarray] = {}
    for index, entry in enumerate(document["dims"]):
        name, perm, size, block, digest = _entry_perm(path, index, entry)
        if name in perms:
            raise _fail(path, f"dim {name!r}: listed twice")
        if expected is not None:
            if name not in expected:
                raise _fail(path, f"dim {name!r}: not a permutable dim of this model")
            dim = expected[name]
            if size != dim.size:
                raise _fail(path, f"dim {name!r}: size {size} but the model's dim has size {dim.size}")
            if block != dim.block:
                raise _fail(path, f"dim {name!r}: block {block} but the model's dim has block {dim.block}")
        problem = permutation_problem(perm, size, block)
        if problem:
            raise _fail(path, f"dim {name!r}: perm {problem}")
        if perm_sha256(perm) != digest:
            raise _fail(path, f"dim {name!r}: sha256 mismatch (file says {digest[:12]}..., perm hashes to "
                              f"{perm_sha256(perm)[:12]}...)")
        perms[name] = perm
    return document, perms


def read_permutation_file(
    path: str | os.PathLike[str], expected_dims: Sequence[Dim] | None = None
) -> dict[str, np.ndarray]:
    """Read and validate permutation.json; return ``{dim name: perm}`` (int64).

    Args:
        path: the file.
        expected_dims: the model's dims (``icd.model.layout.permutable_dims``); when given, every entry must
            name one of them with the same size and block (dims not listed in the file are simply absent).

    Raises:
        ArtefactError: one line naming the file, the dim and the problem: unreadable or invalid JSON, wrong
            schema, missing field, not a permutation of range(n), wrong size, wrong sha256, block violation,
            unknown or duplicate dim.
    """
    return read_permutation_document(path, expected_dims)[1]
