"""A live progress line (rich) with the last interval's rate, p95, errors and late sends."""

from __future__ import annotations

from types import TracebackType

from icd.load.aggregate import IntervalRow


class LiveProgress:
    """Context manager; does nothing when ``enabled`` is false."""

    def __init__(self, total_s: float, enabled: bool) -> None:
        self.total_s = total_s
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._last: dict[str, IntervalRow] = {}

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                      TextColumn("left"), TimeRemainingColumn(), transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("load: starting", total=self.total_s)
        return self

    def update(self, row: IntervalRow) -> None:
        if self._progress is None:
            return
        self._last[row.model] = row
        parts = []
        for name, r in self._last.items():
            p95 = "-" if r.p95_ms is None else f"{r.p95_ms:.1f}"
            parts.append(f"{name}: {r.ok_rps:.0f} ok/s p95 {p95} ms err {r.errors} late {r.late}")
        phase = "warm-up" if row.warmup else "load"
        self._progress.update(self._task, completed=min(row.t_s, self.total_s), description=f"{phase} | " + " | ".join(parts))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
