"""Read a JSON artefact, turning a missing file or bad JSON into a one-line :class:`ArtefactError`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError


def read_json_artefact(path: str | Path, missing: str | None = None) -> Any:
    """Parse ``path``; ``missing`` is the message when the file does not exist (default names the path)."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(missing or f"missing artefact: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtefactError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise ArtefactError(f"{path}: not UTF-8 text (byte {exc.start}); expected JSON") from None
