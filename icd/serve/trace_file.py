"""Where Triton writes its trace files (``--trace-config triton,file=PATH``): checked before the server starts.

Triton 2.51 takes the trace file only at start and, when it cannot write it, fails the traced requests' trace
output silently and late. So the folder is created when missing and refused when it cannot be written, before
any server or load starts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from icd.errors import UserError


def writable_folder(folder: Path, what: str) -> Path:
    """``folder`` (created with its parents when missing) after proving a file can be created in it.

    Raises:
        UserError: it cannot be created, is not a folder, or a file cannot be written in it.
    """
    folder = Path(folder).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".icd-write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot write in this folder ({exc.strerror or exc})") from None
    return folder


def prepare_trace_file(path: Path) -> Path:
    """The absolute trace file path, its folder created and proven writable (an existing file must be writable).

    Raises:
        UserError: the folder cannot be created or written, or the file exists and is not a writable file.
    """
    path = Path(path).expanduser()
    folder = writable_folder(path.parent, "--trace-file folder")
    target = folder / path.name
    if target.exists() and (not target.is_file() or not os.access(target, os.W_OK)):
        raise UserError(f"--trace-file {target}: exists and is not a writable file")
    return target
