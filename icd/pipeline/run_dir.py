"""The run directory of ``icd run --out RUN``: staged, then published atomically.

Everything is written into a hidden staging folder next to ``RUN``; only a complete run is renamed into place
(a previous run at ``RUN`` is replaced only then). A failed run therefore leaves no half-written file, and an
existing folder that is not an icd run is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from icd import __version__
from icd.errors import ArtefactError
from icd.io.atomic import write_json_atomic
from icd.io.json_artefact import read_json_artefact

RUN_MARKER = "run.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_previous_run(path: Path) -> bool:
    """True when ``path`` holds a run written by icd (its ``run.json`` marker parses)."""
    marker = path / RUN_MARKER
    if not marker.is_file():
        return False
    try:
        return "icd_version" in json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False


def check_output_dir(out: Path) -> None:
    """Refuse an existing, non-empty folder that is not a previous run (nothing is written)."""
    if out.exists() and not out.is_dir():
        raise ArtefactError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_previous_run(out):
        raise ArtefactError(f"--out {out}: exists, is not empty and is not a previous icd run (no valid {RUN_MARKER})")


def read_run_marker(run_dir: Path) -> dict[str, Any]:
    return read_json_artefact(Path(run_dir) / RUN_MARKER,
                              f"not an icd run directory (no {RUN_MARKER}): {run_dir}")


@dataclass
class StagedRun:
    """A staging folder that becomes ``out`` on :meth:`publish`, or disappears on :meth:`discard`."""

    out: Path
    staging: Path
    started: str
    made: tuple[Path, ...] = ()
    """The parent folders of ``out`` this run made (shallowest first): :meth:`discard` removes them if empty."""

    @classmethod
    def create(cls, out: Path) -> StagedRun:
        out = Path(out)
        check_output_dir(out)
        made = []
        folder = out.parent
        while not folder.exists():
            made.insert(0, folder)
            folder = folder.parent
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        return cls(out=out, staging=staging, started=utc_now(), made=tuple(made))

    def path(self, name: str) -> Path:
        return self.staging / name

    def publish(self, mode: str, extra: dict[str, Any] | None = None) -> Path:
        """Write the run marker and move the staging folder onto ``out`` (replacing a previous run)."""
        marker = {"icd_version": __version__, "status": "complete", "mode": mode, "started": self.started,
                  "finished": utc_now(), **(extra or {})}
        write_json_atomic(self.staging / RUN_MARKER, marker)
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            self.out.rename(old)
        self.staging.rename(self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        """Remove the staging folder and the parent folders :meth:`create` made, unless something else is in them."""
        shutil.rmtree(self.staging, ignore_errors=True)
        for folder in reversed(self.made):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): leave it and everything above it
                break
