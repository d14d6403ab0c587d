"""What ``icd stack`` started: one record per service, written atomically, removed when the service stops.

Layout under the icd state folder (``--state-dir``, ``$ICD_STATE_DIR`` or the nearest ``.icd``)::

    stack/<project>/<service>.json     ServiceRecord (pids, ports, log, compose file)
    stack/<project>/<service>/         the service's work folder (Triton backends, Prometheus data, ...)
    stack/<project>/logs/<service>.log stdout + stderr of the service
    stack/<project>/volumes/<name>/    named volumes of the compose file

A record is written only after its service answered ready, and deleted before ``up`` reports a failure, so
the folder never describes a service that is not running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.monitor.process import pid_alive

STACK_SUBDIR = "stack"


@dataclass
class ServiceRecord:
    """One running service of an embedded stack.

    Attributes:
        service: compose service name (``triton``, ``triton-green``, ``prometheus``, ``router``, ...).
        kind: what runs it (:class:`icd.stack.kinds.ServiceKind` value).
        project: compose project name (the compose folder's name, as docker-compose).
        compose_file: the compose file that defined it (restart re-reads it).
        pids: processes of the service, main first (a Triton and its repository watcher, nginx and its exporter).
        ports: published host ports by role (``http``, ``grpc``, ``metrics``, ``web``, ...).
        log_file: its stdout + stderr.
        urls: where to reach it, by role.
        started: unix time it answered ready.
        log_offset: size of the log file when this start began (what this run wrote comes after it).
    """

    service: str
    kind: str
    project: str
    compose_file: str
    pids: list[int]
    ports: dict[str, int]
    log_file: str
    urls: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    log_offset: int = 0

    def log_text(self) -> str:
        """What the service wrote to its log since this start."""
        path = Path(self.log_file)
        if not path.is_file():
            return ""
        with open(path, "rb") as handle:
            handle.seek(self.log_offset)
            return handle.read().decode(errors="replace")

    @property
    def container_name(self) -> str:
        """docker-compose v1's container name for this service (``triton_triton_1``)."""
        return f"{self.project}_{self.service}_1"

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return bool(self.pids) and pid_alive(self.pids[0])


class StackState:
    """The records of one compose project under ``<state>/stack/<project>``."""

    def __init__(self, state_dir: Path, project: str) -> None:
        self.state_dir = Path(state_dir)
        self.folder = self.state_dir / STACK_SUBDIR / project
        self.project = project

    def record_path(self, service: str) -> Path:
        return self.folder / f"{service}.json"

    def work_dir(self, service: str) -> Path:
        return self.folder / service

    def log_file(self, service: str) -> Path:
        return self.folder / "logs" / f"{service}.log"

    def volume_dir(self, name: str) -> Path:
        return self.folder / "volumes" / name

    def read(self, service: str) -> ServiceRecord | None:
        """The record of ``service`` (None when there is none).

        Raises:
            UserError: the record is not a service record (names the file to remove).
        """
        path = self.record_path(service)
        if not path.is_file():
            return None
        try:
            return ServiceRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: not an icd stack record ({exc}); remove it") from None

    def write(self, record: ServiceRecord) -> None:
        write_json_atomic(self.record_path(record.service), asdict(record))

    def remove(self, service: str) -> None:
        self.record_path(service).unlink(missing_ok=True)

    def records(self) -> list[ServiceRecord]:
        """Every record of the project, in name order."""
        if not self.folder.is_dir():
            return []
        found = (self.read(p.stem) for p in sorted(self.folder.glob("*.json")))
        return [r for r in found if r is not None]
