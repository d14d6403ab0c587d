"""How the coordinator steers running workers: per-model target rates, a stop flag and the common start time.

:class:`SharedControl` lives in shared memory for worker processes; :class:`LocalControl` is the same thing for a
generator running inside the calling process. Times are ``time.monotonic()`` seconds, a clock shared by every
process on the machine.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Protocol


class Control(Protocol):
    def rate(self, model_index: int) -> float: ...

    def set_rate(self, model_index: int, rate: float) -> None: ...

    def stopped(self) -> bool: ...

    def stop(self) -> None: ...

    def start_at(self) -> float: ...

    def set_start_at(self, t: float) -> None: ...


class LocalControl:
    """Control for an in-process generator."""

    def __init__(self, rates: list[float]) -> None:
        self._rates = list(rates)
        self._stopped = False
        self._start = 0.0

    def rate(self, model_index: int) -> float:
        return self._rates[model_index]

    def set_rate(self, model_index: int, rate: float) -> None:
        self._rates[model_index] = rate

    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True

    def start_at(self) -> float:
        return self._start

    def set_start_at(self, t: float) -> None:
        self._start = t


class SharedControl:
    """Control shared with worker processes (lock-free doubles; one writer, the coordinator)."""

    def __init__(self, ctx: mp.context.BaseContext, rates: list[float]) -> None:
        self._rates = ctx.RawArray("d", [float(r) for r in rates])
        self._flags = ctx.RawArray("d", [0.0, 0.0])  # [stopped, start_at]

    def rate(self, model_index: int) -> float:
        return self._rates[model_index]

    def set_rate(self, model_index: int, rate: float) -> None:
        self._rates[model_index] = rate

    def stopped(self) -> bool:
        return self._flags[0] != 0.0

    def stop(self) -> None:
        self._flags[0] = 1.0

    def start_at(self) -> float:
        return self._flags[1]

    def set_start_at(self, t: float) -> None:
        self._flags[1] = t
