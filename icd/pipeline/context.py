"""What every stage of a run shares: the config, tokenizer, corpus split, dimensions, event log, progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import Progress

from icd.config.schema import IcdConfig
from icd.data.corpus import CorpusSplit
from icd.model.layout import Dim
from icd.pipeline.events import EventLog

T = TypeVar("T")


@dataclass
class RunContext:
    cfg: IcdConfig
    tokenizer: Any
    split: CorpusSplit
    dims: list[Dim]
    events: EventLog
    console: Console
    progress: bool = True

    def progress_iter(self, items: Iterable[T], label: str) -> Iterator[T]:
        """Iterate ``items`` with a rich progress bar (when progress is on)."""
        items = list(items)
        if not self.progress:
            yield from items
            return
        with Progress(console=self.console, transient=True) as bar:
            task = bar.add_task(label, total=len(items))
            for item in items:
                yield item
                bar.advance(task)
