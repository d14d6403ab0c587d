"""Progress of a search (rich): a bar over configurations and one line per measurement, on stderr.

Lines are printed whether or not stderr is a terminal (logs and CI see every measurement); the live bar only
on a terminal. Replayed measurements (from a resumed checkpoint) are marked ``(checkpoint)``.
"""

from __future__ import annotations

from types import TracebackType

from icd.tune.measurement import LoadPoint, PointStatus, Slo


def point_line(point: LoadPoint, slo: Slo) -> str:
    """One human line for a measurement."""
    if point.status != PointStatus.OK:
        return f"{point.config_id}: {point.status.value} — {point.detail}"
    latency = point.value(slo.tag)
    shown = "-" if latency is None else f"{latency:.1f} ms"
    verdict = "meets SLO" if point.meets(slo) else ("errors" if point.errors else "misses SLO")
    return (f"{point.config_id} c={point.concurrency}: {point.throughput:.1f} req/s, p{slo.percentile} {shown}"
            f"{f', {point.errors} errors' if point.errors else ''} ({verdict})")


class TuneProgress:
    """Context manager; ``enabled=False`` prints nothing."""

    def __init__(self, slo: Slo, total_configs: int | None, enabled: bool = True) -> None:
        self.slo = slo
        self.total = total_configs
        self.enabled = enabled
        self.done = 0
        self._console = None
        self._progress = None
        self._task = None

    def __enter__(self) -> TuneProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = Console(stderr=True, highlight=False)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self._console, disable=not self._console.is_terminal)
        self._progress.__enter__()
        self._task = self._progress.add_task("tune", total=self.total)
        return self

    def config(self, config_id: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"tune: {config_id}")

    def point(self, point: LoadPoint, replayed: bool) -> None:
        if self._console is not None:
            self._console.print(("  (checkpoint) " if replayed else "  ") + point_line(point, self.slo), markup=False)

    def config_done(self) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def say(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, markup=False)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
