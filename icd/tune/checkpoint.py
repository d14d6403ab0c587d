"""The search's checkpoint: every measurement, written atomically after each one, so a run can resume.

As Model Analyzer's state manager: a run that stops (Ctrl-C, a server that died, a crash) leaves
``<report>.checkpoint.json``; the same command again replays the search, answering from the checkpoint every
measurement it already holds, and measures only what is missing. The checkpoint carries a *fingerprint* of
what makes measurements comparable (model, space, SLO, objective, load); a run with another fingerprint refuses
to mix into it (``--fresh`` starts over). Reports are rendered from the checkpoint, offline, any time.

Schema (``icd.tune.checkpoint/1``)::

    {"schema", "status": "running"|"complete"|"stopped"|"interrupted", "stop_reason", "started", "updated",
     "fingerprint": {...}, "base_config": {...Triton JSON...}, "kind", "notes": [...], "host": {...},
     "launch": {"mode", "endpoint"}, "variants": {"<version>": {"version", "runtime", "precision"}},
     "points": [LoadPoint JSON, ...]}
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError, UserError
from icd.io.atomic import write_json_atomic
from icd.tune.measurement import LoadPoint, PointStatus

SCHEMA = "icd.tune.checkpoint/1"


class RunStatus(str, Enum):
    """State of a search, as its checkpoint says."""

    RUNNING = "running"
    """Measuring (or a process that died without saying more)."""
    COMPLETE = "complete"
    """The strategy ran to its end."""
    STOPPED = "stopped"
    """Ended early on purpose: the remote server died (``stop_reason`` says what happened)."""
    INTERRUPTED = "interrupted"
    """Ctrl-C; the same command resumes it."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
    return f"{where}: {old!r} -> {new!r}"


@dataclass
class Checkpoint:
    """In-memory checkpoint bound to its file (see module docstring)."""

    path: Path
    fingerprint: dict[str, Any]
    points: list[LoadPoint] = field(default_factory=list)
    status: RunStatus = RunStatus.RUNNING
    stop_reason: str = ""
    started: str = field(default_factory=_now)
    updated: str = ""
    base_config: dict[str, Any] | None = None
    kind: str = ""
    notes: list[str] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: int = 0

    # --------------------------------------------------------------------------------------------- lookup
    def lookup(self, config_id: str, concurrency: int) -> LoadPoint | None:
        """The stored point of ``config_id`` at ``concurrency`` — or its failure point, which answers any level."""
        for point in self.points:
            if point.config_id != config_id:
                continue
            if point.concurrency == concurrency or point.status in (PointStatus.REJECTED, PointStatus.SERVER_DIED,
                                                                    PointStatus.FAILED):
                return point
        return None

    @property
    def measured(self) -> int:
        """Load runs held (configurations refused before any load are not counted)."""
        return sum(1 for p in self.points if p.concurrency is not None)

    # --------------------------------------------------------------------------------------------- writing
    def add(self, point: LoadPoint) -> None:
        self.points.append(point)
        self.save()

    def finish(self, status: RunStatus, reason: str = "") -> None:
        self.status, self.stop_reason = status, reason
        self.save()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "status": self.status.value, "stop_reason": self.stop_reason, "started": self.started,
                "updated": self.updated, "fingerprint": self.fingerprint, "base_config": self.base_config,
                "kind": self.kind, "notes": self.notes, "host": self.host, "launch": self.launch,
                "variants": self.variants,
                "points": [p.to_json() for p in self.points]}

    def save(self) -> None:
        self.updated = _now()
        try:
            write_json_atomic(self.path, self.to_json())
        except OSError as exc:
            raise UserError(f"checkpoint {self.path}: cannot write ({exc.strerror})") from None

    # --------------------------------------------------------------------------------------------- reading
    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        """Load a checkpoint file.

        Raises:
            ArtefactError: missing, not JSON, or not a checkpoint of this schema.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtefactError(f"checkpoint {path}: not found")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtefactError(f"checkpoint {path}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ArtefactError(f"checkpoint {path}: schema is not {SCHEMA}")
        try:
            points = [LoadPoint.from_json(p) for p in doc.get("points", [])]
            return cls._from_doc(path, doc, points)
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtefactError(f"checkpoint {path}: malformed ({exc})") from None

    @classmethod
    def _from_doc(cls, path: Path, doc: dict[str, Any], points: list[LoadPoint]) -> Checkpoint:
        return cls(path=path, fingerprint=doc.get("fingerprint", {}), points=points,
                   status=RunStatus(doc.get("status", RunStatus.RUNNING.value)),
                   stop_reason=doc.get("stop_reason", ""), started=doc.get("started", ""),
                   updated=doc.get("updated", ""), base_config=doc.get("base_config"), kind=doc.get("kind", ""),
                   notes=list(doc.get("notes", [])), host=doc.get("host", {}), launch=doc.get("launch", {}),
                   variants=dict(doc.get("variants", {})))

    @classmethod
    def open(cls, path: Path, fingerprint: dict[str, Any], fresh: bool) -> Checkpoint:
        """Resume the checkpoint at ``path`` when its fingerprint matches; a new one when absent or ``fresh``.

        Raises:
            UserError: a checkpoint for other settings exists (names the first differing setting).
        """
        path = Path(path)
        if fresh or not path.exists():
            return cls(path=path, fingerprint=fingerprint)
        old = cls.read(path)
        if old.fingerprint != fingerprint:
            raise UserError(f"checkpoint {path} holds a search with other settings "
                            f"({_first_difference(old.fingerprint, fingerprint)}): pass --fresh to start over, "
                            "or choose another --report path")
        old.resumed = len(old.points)
        old.status, old.stop_reason = RunStatus.RUNNING, ""
        return old
