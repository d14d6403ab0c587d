"""Reading the router's JSON access log (one line per proxied model request, see router_config.py).

Example:
    reader = AccessLogReader(Path("runs/router/access.jsonl"))
    recent = reader.since(time.time() - 60)      # RouterRecord list of the last minute
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar


@dataclass(frozen=True)
class RouterRecord:
    """One request as nginx saw it."""

    t: float
    """Completion time (epoch seconds, ms resolution)."""
    variant: str
    """Variant the request was routed to."""
    status: int
    """HTTP status returned to the client."""
    request_time_s: float
    """nginx ``$request_time`` (first client byte to last byte sent, ms resolution)."""
    upstream: str
    """Upstream address(es) tried."""
    colour: str
    """Active upstream colour."""
    generation: int
    """Router config generation."""
    request_id: str = ""
    """nginx ``$request_id`` (also sent to the client as ``X-ICD-Request-Id`` and to the shadow comparator)."""

    @property
    def is_error(self) -> bool:
        return self.status >= 500


def parse_line(line: str) -> RouterRecord | None:
    """One log line → record; ``None`` for a partial or foreign line."""
    try:
        d = json.loads(line)
        return RouterRecord(float(d["t"]), str(d["variant"]), int(d["status"]), float(d["request_time"]),
                            str(d.get("upstream", "")), str(d.get("colour", "")), int(d.get("generation", -1)),
                            str(d.get("rid", "")))
    except (ValueError, KeyError, TypeError):
        return None


class _Timed(Protocol):
    t: float


R = TypeVar("R", bound=_Timed)


class JsonlTail(Generic[R]):
    """Incremental reader of a JSON-lines log: remembers its offset, keeps records of the last ``keep_s`` seconds.

    ``parse`` turns one line into a record (``None`` for a partial or foreign line).
    """

    def __init__(self, path: str | Path, parse: Callable[[str], R | None], keep_s: float = 3600.0) -> None:
        self.path = Path(path)
        self.parse = parse
        self.keep_s = keep_s
        self._offset = 0
        self._partial = b""
        self._records: deque[R] = deque()

    def poll(self) -> list[R]:
        """Read lines appended since the last call; returns the new records."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(0, 2)
            if handle.tell() < self._offset:  # rotated / truncated
                self._offset, self._partial = 0, b""
            handle.seek(self._offset)
            chunk = handle.read()
            self._offset = handle.tell()
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        new = [r for r in (self.parse(x.decode("utf-8", "replace")) for x in lines if x) if r is not None]
        self._records.extend(new)
        if self._records:
            horizon = self._records[-1].t - self.keep_s
            while self._records and self._records[0].t < horizon:
                self._records.popleft()
        return new

    def since(self, t0: float) -> list[R]:
        """All kept records completed at or after ``t0`` (polls first)."""
        self.poll()
        return [r for r in self._records if r.t >= t0]


class AccessLogReader(JsonlTail[RouterRecord]):
    """Incremental reader of the router's access log."""

    def __init__(self, path: str | Path, keep_s: float = 3600.0) -> None:
        super().__init__(path, parse_line, keep_s)
