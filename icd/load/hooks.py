"""Event hooks (Locust style): subscribe with ``hooks.on_interval.add_listener(fn)``.

* ``on_start(target, settings)`` — after the pre-run check, as load begins.
* ``on_request(record)`` — every finished request (:class:`icd.load.stats.RequestRecord`); only when the
  generator runs in the calling process (``LoadSettings.workers == 0``).
* ``on_interval(row)`` — every model's completed interval (:class:`icd.load.aggregate.IntervalRow`), about once
  per second, whatever the number of workers.
* ``on_stop(report)`` — with the final (or partial) :class:`icd.load.report.LoadReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class EventHook:
    """A list of listeners called in order."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., Any]] = []

    def add_listener(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._listeners.append(fn)
        return fn

    def remove_listener(self, fn: Callable[..., Any]) -> None:
        self._listeners.remove(fn)

    def fire(self, *args: Any) -> None:
        for fn in self._listeners:
            fn(*args)

    def __bool__(self) -> bool:
        return bool(self._listeners)


@dataclass
class Hooks:
    on_start: EventHook = field(default_factory=EventHook)
    on_request: EventHook = field(default_factory=EventHook)
    on_interval: EventHook = field(default_factory=EventHook)
    on_stop: EventHook = field(default_factory=EventHook)
