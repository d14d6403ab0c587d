"""Stage timing and the ``events.jsonl`` log: one JSON line per stage (name, start, seconds, key numbers)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from icd.pipeline.run_dir import utc_now


@dataclass
class StageEvent:
    stage: str
    start: str
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "start": self.start, "seconds": round(self.seconds, 4), **self.numbers}


class EventLog:
    """Appends one line per finished stage to ``events.jsonl`` and logs it with its wall time."""

    def __init__(self, path: Path, console: Console | None = None, prefix: str = "") -> None:
        self.path = Path(path)
        self.console = console or Console(stderr=True)
        self.prefix = prefix
        self.events: list[StageEvent] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[StageEvent]:
        """Time a stage; the body may add key numbers to ``event.numbers``."""
        event = StageEvent(stage=name, start=utc_now())
        began = time.perf_counter()
        yield event
        event.seconds = time.perf_counter() - began
        self.record(event)

    def record(self, event: StageEvent) -> None:
        self.events.append(event)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event.as_json(), default=_plain) + "\n")
        shown = ", ".join(f"{k}={_short(v)}" for k, v in event.numbers.items() if not isinstance(v, dict | list))
        self.console.log(f"{self.prefix}[bold]{event.stage}[/bold] {event.seconds:.2f}s {shown}")


def _plain(obj: Any) -> Any:
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
