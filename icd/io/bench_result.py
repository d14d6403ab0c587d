"""The record every benchmark writes to ``bench/results/<name>.json``: what ran, where, when, under what load.

Every figure in README or docs comes from such a file (tests/docs/test_figures_backed.py checks it). The
provenance keys sit at the top level, next to the figures:

* ``command`` — the exact command line (``python bench/<name>.py --flag ...``);
* ``machine`` — ``{"cpu", "cores", "platform"}`` (CPU model from /proc/cpuinfo);
* ``date`` — UTC start, ISO 8601; ``finished`` — UTC end;
* ``load_average`` — ``{"start": [1m, 5m, 15m], "end": [...]}`` and ``load_high``: true when the 1-minute load
  at start or end exceeded the number of cores + 1 (other jobs shared the CPUs: timings are pessimistic). A
  benchmark's own threads (up to one per core) count in the load average, and so does a benchmark that finished
  within the last minutes, so a load up to the core count alone does not mean other jobs ran;
* ``versions`` — python, torch, numpy (as installed; nothing is imported to find them).

Example:
    record = BenchRecord.start()
    ...                      # measure
    record.write("bench/results/loadgen.json", {"figures": {...}})
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from icd.io.atomic import write_json_atomic

PROVENANCE_KEYS = ("command", "machine", "date", "load_average")
"""Top-level keys every results JSON carries."""

_VERSIONED = ("torch", "numpy")


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def load_is_high(*one_minute_loads: float, cores: int | None = None) -> bool:
    """Whether other jobs shared the CPUs: a 1-minute load above the core count + 1 (a benchmark's own threads, up
    to one per core, count in the load average, and so does one that finished minutes ago)."""
    return max(one_minute_loads) > (cores or os.cpu_count() or 1) + 1


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Each installed distribution's version (None when it is not installed); nothing is imported."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **package_versions(_VERSIONED)}


def command_line(argv: list[str] | None = None) -> str:
    """``python <script> <args>`` as run (the script path relative to the working directory when inside it)."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        if script.is_absolute():
            try:
                argv[0] = str(script.relative_to(Path.cwd()))
            except ValueError:
                pass
    return shlex.join(["python", *argv])


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class BenchRecord:
    """Provenance taken when a benchmark starts; :meth:`write` completes it and writes the results JSON."""

    command: str
    date: str
    load_start: list[float]
    machine: dict[str, Any] = field(default_factory=machine)
    versions: dict[str, str | None] = field(default_factory=versions)

    @classmethod
    def start(cls, argv: list[str] | None = None) -> BenchRecord:
        return cls(command_line(argv), _utc_now(), load_average())

    def provenance(self) -> dict[str, Any]:
        """The provenance block as of now (end load average taken now)."""
        end = load_average()
        cores = self.machine.get("cores") or 1
        return {
            "command": self.command,
            "machine": self.machine,
            "date": self.date,
            "finished": _utc_now(),
            "load_average": {"start": self.load_start, "end": end},
            "load_high": load_is_high(self.load_start[0], end[0], cores=cores),
            "versions": self.versions,
        }

    def write(self, path: str | os.PathLike[str], figures: dict[str, Any]) -> dict[str, Any]:
        """Write ``{provenance..., figures...}`` atomically to ``path``; returns the document."""
        doc = {**self.provenance(), **figures}
        write_json_atomic(path, doc)
        return doc
