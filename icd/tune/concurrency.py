"""The concurrency sweep of one configuration: a generator fed back with each measurement.

As perf_analyzer's concurrency range in Model Analyzer, a configuration's capacity under the SLO is found by
raising the number of closed-loop clients: it stops at the first level that breaks the SLO (more clients only
queue longer) or that adds less than :data:`PLATEAU_GAIN` throughput over the best level so far (the server is
saturated). Started above the lowest level, it walks *down* until a level meets the SLO when the first one does
not. Quick mode *probes* a neighbour at the level where the current configuration peaked and stops after that
one measurement unless the neighbour meets the SLO and beats the current configuration there.

Example:
    >>> sweep = concurrency_sweep([1, 2, 4], Slo(100.0))
    >>> level = next(sweep)              # 1
    >>> # level = sweep.send(point)      # feed each LoadPoint back; StopIteration ends the sweep
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from icd.tune.measurement import LoadPoint, PointStatus, Slo

PLATEAU_GAIN = 0.05
"""A higher concurrency must add at least this fraction of throughput to be worth trying the next one."""

Sweep = Generator[int, LoadPoint, None]


def concurrency_sweep(levels: Sequence[int], slo: Slo, start: int = 0,
                      beats: Callable[[LoadPoint], bool] | None = None) -> Sweep:
    """Yield concurrency levels to measure, from ``levels[start]``; each ``send`` gives the point measured.

    Args:
        levels: concurrency levels, ascending.
        slo: the latency objective.
        start: index of the first level.
        beats: a *probe* (quick mode): whether a point beats the incumbent configuration's best. The first point,
            measured at the level where the incumbent peaked, must meet the SLO and beat it, else the sweep ends
            there (one measurement); if it does, the sweep goes on upward as usual.
    """
    if not levels:
        raise ValueError("concurrency levels: empty")
    index = min(max(start, 0), len(levels) - 1)
    point = yield levels[index]
    if point.status != PointStatus.OK:
        return
    if beats is not None and (not point.meets(slo) or not beats(point)):
        return
    if not point.meets(slo):
        while index > 0:  # seeded too high: walk down to the first level that meets the SLO
            index -= 1
            point = yield levels[index]
            if point.status != PointStatus.OK or point.meets(slo):
                return
        return
    best = point.throughput
    while index + 1 < len(levels):
        index += 1
        point = yield levels[index]
        if point.status != PointStatus.OK or not point.meets(slo):
            return
        if point.throughput < best * (1.0 + PLATEAU_GAIN):
            return
        best = point.throughput
