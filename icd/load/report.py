"""The load report: the guide's keys (``requests``, ``duration_s``, ``throughput_rps``, ``latency_ms.mean``,
``latency_ms.p95``) plus p50/p90/p99/p99.9/max, errors by kind, late sends, the settings and a per-second series.

Latency is client-side wall time per request, from the intended send time (open loop) or the actual send time
(closed loop) to the last byte of the answer; only successful requests are in the latency histogram.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.load.aggregate import IntervalRow, ModelTotals
from icd.load.histogram import LatencyHistogram
from icd.load.settings import LoadMode, LoadSettings
from icd.load.stats import Counters
from icd.load.target import Target


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


def summarize(counters: Counters, hist: LatencyHistogram, duration_s: float, settings: LoadSettings,
              unsent: int = 0, unfinished: int = 0, warmup: Counters | None = None) -> dict[str, Any]:
    """Report fields of one span (a model, or all models merged)."""
    done = counters.ok + counters.error_total
    open_loop = settings.mode == LoadMode.OPEN
    return {
        "requests": done,
        "requests_ok": counters.ok,
        "duration_s": round(duration_s, 3),
        "throughput_rps": _rate(counters.ok, duration_s),
        "inferences_per_s": _rate(counters.ok * settings.batch_size, duration_s),
        "latency_ms": hist.summary_ms(),
        "latency_from": "intended send time" if open_loop else "send time",
        "errors": {
            "total": counters.error_total,
            "rate": round(counters.error_total / done, 6) if done else None,
            "by_kind": dict(sorted(counters.errors.items())),
            "samples": dict(sorted(counters.error_samples.items())),
        },
        "sent": counters.sent,
        "late_sends": counters.late if open_loop else None,
        "late_send_fraction": round(counters.late / counters.sent, 6) if open_loop and counters.sent else None,
        "max_send_lag_ms": round(counters.max_lag_s * 1000.0, 3) if open_loop else None,
        "unsent_at_end": unsent,
        "unfinished_at_end": unfinished,
        "warmup_excluded": None if warmup is None else {
            "sent": warmup.sent, "ok": warmup.ok, "errors": warmup.error_total},
    }


@dataclass
class LoadReport:
    """Result of :func:`icd.load.run_load` (complete or, when ``interrupted``, partial)."""

    settings: LoadSettings
    target: Target
    totals: dict[str, ModelTotals]
    series: dict[str, list[IntervalRow]]
    duration_s: float
    started: str
    finished: str
    interrupted: bool = False
    workers: int = 1
    problems: list[str] = field(default_factory=list)

    def merged(self) -> tuple[Counters, LatencyHistogram]:
        """All models' counters and histograms merged (exact)."""
        counters, hist = Counters(), LatencyHistogram()
        for tot in self.totals.values():
            counters.merge(tot.measured)
            hist.merge(tot.hist)
        return counters, hist

    def model_summary(self, name: str) -> dict[str, Any]:
        tot = self.totals[name]
        out = summarize(tot.measured, tot.hist, self.duration_s, self.settings, tot.unsent_at_end,
                        tot.unfinished_at_end, tot.warmup)
        out["timeseries"] = [row.to_dict() for row in self.series.get(name, [])]
        return out

    def to_dict(self) -> dict[str, Any]:
        counters, hist = self.merged()
        out = summarize(counters, hist, self.duration_s, self.settings,
                        sum(t.unsent_at_end for t in self.totals.values()),
                        sum(t.unfinished_at_end for t in self.totals.values()))
        out.pop("warmup_excluded")
        out.update({
            "endpoint": self.target.endpoint,
            "models": {name: self.model_summary(name) for name in self.totals},
            "mode": self.settings.mode.value,
            "settings": self.settings.to_dict(),
            "generator": {"workers": self.workers, "histogram": "HdrHistogram 1us..1h, 3 significant digits",
                          "client": f"icd.load ({self.settings.protocol.value})"},
            "started": self.started,
            "finished": self.finished,
            "interrupted": self.interrupted,
            "problems": self.problems,
        })
        return out

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        write_report_json(path, self.to_dict())
        return Path(path)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise ``UserError`` now (before any load) if a report cannot be written at ``path``."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"--report {target}: is a directory; give a file path")
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"--report {target}: {probe} is not a directory")
    try:  # a real probe: os.access says yes to root everywhere, even on read-only or virtual file systems
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=probe)
    except OSError as exc:
        raise UserError(f"--report {target}: cannot write in {probe} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(name)
    if target.exists() and not os.access(target, os.W_OK):
        raise UserError(f"--report {target}: file is not writable")
    return target


def write_report_json(path: str | os.PathLike[str], obj: dict[str, Any]) -> None:
    try:
        write_json_atomic(path, obj)
    except OSError as exc:
        raise UserError(f"--report {path}: cannot write ({exc.strerror})") from None
