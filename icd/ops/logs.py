"""Parse ICD structured log lines (``ICD {json}``, written by the serving model) and Triton's own log lines.

A line is one of: an ICD record (the JSON object after the ``ICD`` tag, possibly behind a ``docker logs`` /
compose prefix), a Triton glog line (``I1127 07:00:00.123456 1234 file.cc:12] message``), or malformed (an
``ICD`` tag whose JSON does not parse, or a record without ``model``). Other lines are ignored. Malformed lines
are counted and sampled, never fatal.

Time of a record: its own ``ts`` / ``time`` / ``timestamp`` field (unix seconds) if present, else the time of
the last Triton log line before it, else its line number (the report says which axis it used).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from icd.errors import UserError

ICD_TAG = "ICD"
_ICD_RE = re.compile(r"(?:^|[\s|])ICD\s+(\{.*)$")
_GLOG_RE = re.compile(r"^(?:.*?\|\s*)?([IWEF])(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6})\s+\d+\s+(\S+?)\]\s?(.*)$")
_TIME_FIELDS = ("ts", "time", "timestamp")
MALFORMED_SAMPLES = 5


class TimeAxis(str, Enum):
    """Where record times come from."""

    FIELD = "record timestamp"
    """Each ICD record carries ``ts`` / ``time`` / ``timestamp`` (unix seconds)."""
    TRITON = "last Triton log timestamp before the record"
    """Borrowed from the nearest preceding Triton log line (year assumed current)."""
    LINE = "line number"
    """No timestamps at all: records are ordered by line number."""


@dataclass(frozen=True)
class IcdRecord:
    line: int
    time: float
    fields: dict

    @property
    def model(self) -> str:
        return str(self.fields.get("model", "?"))

    def value(self, metric: str) -> float | None:
        """A numeric field; ``a.b`` reaches into nested objects (``profile.forward_ms``)."""
        node: object = self.fields
        for part in metric.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return None
        return float(node)


@dataclass(frozen=True)
class TritonLine:
    line: int
    time: float
    severity: str
    source: str
    message: str


@dataclass
class ParsedLog:
    records: list[IcdRecord] = field(default_factory=list)
    triton: list[TritonLine] = field(default_factory=list)
    malformed: int = 0
    malformed_samples: list[str] = field(default_factory=list)
    other_lines: int = 0
    total_lines: int = 0
    time_axis: TimeAxis = TimeAxis.LINE

    def note_malformed(self, number: int, text: str, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_samples) < MALFORMED_SAMPLES:
            self.malformed_samples.append(f"line {number}: {why}: {text[:120]}")


def _glog_time(match: re.Match[str], year: int) -> float:
    month, day, hh, mm, ss, us = (int(match.group(i)) for i in range(2, 8))
    try:
        stamp = _dt.datetime(year, month, day, hh, mm, ss, us, tzinfo=_dt.timezone.utc)
    except ValueError:
        return float("nan")
    return stamp.timestamp()


def _record_time(fields: dict) -> float | None:
    for name in _TIME_FIELDS:
        value = fields.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def parse_lines(lines: Iterable[str], year: int | None = None) -> ParsedLog:
    """Parse log lines (see module docstring)."""
    year = year or _dt.datetime.now(_dt.timezone.utc).year
    out = ParsedLog()
    last_triton: float | None = None
    has_field = has_triton = True
    for number, raw in enumerate(lines, start=1):
        out.total_lines += 1
        text = raw.rstrip("\n")
        icd = _ICD_RE.search(text)
        if icd:
            try:
                fields = json.loads(icd.group(1))
            except json.JSONDecodeError:
                out.note_malformed(number, text, "ICD tag with invalid JSON")
                continue
            if not isinstance(fields, dict) or "model" not in fields:
                out.note_malformed(number, text, "ICD record without a model field")
                continue
            own = _record_time(fields)
            has_field &= own is not None
            has_triton &= last_triton is not None
            when = own if own is not None else (last_triton if last_triton is not None else float(number))
            out.records.append(IcdRecord(number, when, fields))
            continue
        glog = _GLOG_RE.match(text)
        if glog:
            last_triton = _glog_time(glog, year)
            out.triton.append(TritonLine(number, last_triton, glog.group(1), glog.group(8), glog.group(9)))
        elif ICD_TAG in text.split():
            out.note_malformed(number, text, "ICD tag without a JSON object")
        else:
            out.other_lines += 1
    if out.records:
        out.time_axis = TimeAxis.FIELD if has_field else TimeAxis.TRITON if has_triton else TimeAxis.LINE
        if out.time_axis == TimeAxis.LINE:
            out.records = [IcdRecord(r.line, float(r.line), r.fields) for r in out.records]
    return out


def parse_file(path: Path) -> ParsedLog:
    """Parse a log file (undecodable bytes are replaced, never fatal).

    Raises:
        UserError: the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse_lines(handle)
    except OSError as exc:
        raise UserError(f"--log-file {path}: cannot read ({exc.strerror})") from None
