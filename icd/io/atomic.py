"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A crash or an exception in the middle leaves the previous file (or none), never a half-written one. The file gets
the permissions a plain ``open(path, "w")`` would give it — the replaced file's mode, else 0666 less the umask —
not the 0600 of the temporary file, unless ``mode`` says otherwise (secrets: 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0o022)  # the only portable read is a write: put it straight back
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _final_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8",
                file_mode: int | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on clean exit rename it onto ``path``, else delete it.

    ``file_mode``: the permissions of the result (default: as ``open`` would give; see the module docstring).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), _final_mode(target) if file_mode is None else file_mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, file_mode: int | None = None) -> None:
    with atomic_open(path, "wb", file_mode=file_mode) as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars / arrays and Paths appear in reports; keep the dependency optional here.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
