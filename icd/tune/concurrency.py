"""The concurrency sweep of one configuration: a generator fed back with each measurement.

As perf_analyzer's concurrency range in Model Analyzer, a configuration's capacity under the SLO is found by
raising the number of closed-loop clients: it stops at the first level that breaks the SLO (more clients only
queue longer) or after :data:`PATIENCE` levels in a row that add less than :data:`PLATEAU_GAIN` throughput over
the best level so far (the server is saturated; one such level alone is as often a noisy 4-s measurement).
Started above the lowest level, it walks *down* until a level meets the SLO when the first one does not. Quick
mode *probes* a neighbour at the level where the current configuration peaked and stops after that one
measurement unless the neighbour meets the SLO and beats the current configuration there — or comes within
:data:`PROBE_MARGIN` of it, when one level higher is measured too (a configuration with larger batches may peak
higher up).

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
PATIENCE = 2
"""Consecutive levels adding less than :data:`PLATEAU_GAIN` before a sweep stops (one short step of a 4-s
measurement is as often noise as saturation: measured, docs/scaling.md)."""
PROBE_MARGIN = 0.9
"""A probed neighbour within this fraction of the incumbent's throughput at the incumbent's peak level is
measured one level higher too before it is dropped (it may peak higher up, where batching pays)."""

Sweep = Generator[int, LoadPoint, None]


def concurrency_sweep(levels: Sequence[int], slo: Slo, start: int = 0,
                      beats: Callable[[LoadPoint], bool] | None = None,
                      near: Callable[[LoadPoint], bool] | None = None) -> Sweep:
    """Yield concurrency levels to measure, from ``levels[start]``; each ``send`` gives the point measured.

    Args:
        levels: concurrency levels, ascending.
        slo: the latency objective.
        start: index of the first level.
        beats: a *probe* (quick mode): whether a point beats the incumbent configuration's best. The first point,
            measured at the level where the incumbent peaked, must meet the SLO and beat it, else the sweep ends
            there (one measurement); if it does, the sweep goes on upward as usual.
        near: with ``beats``, whether a point that does not beat the incumbent is within :data:`PROBE_MARGIN` of
            it: such a probe is measured one level higher too, and swept on upward if it beats the incumbent there.
    """
    if not levels:
        raise ValueError("concurrency levels: empty")
    index = min(max(start, 0), len(levels) - 1)
    point = yield levels[index]
    if point.status != PointStatus.OK:
        return
    if beats is not None and (not point.meets(slo) or not beats(point)):
        if near is not None and point.meets(slo) and index + 1 < len(levels) and near(point):
            point = yield levels[index + 1]
            if point.status == PointStatus.OK and point.meets(slo) and beats(point):
                index += 1
                yield from _upward(levels, slo, index, point.throughput)
        return
    if not point.meets(slo):
        while index > 0:  # seeded too high: walk down to the first level that meets the SLO
            index -= 1
            point = yield levels[index]
            if point.status != PointStatus.OK or point.meets(slo):
                return
        return
    yield from _upward(levels, slo, index, point.throughput)


def _upward(levels: Sequence[int], slo: Slo, index: int, best: float) -> Sweep:
    """Raise the concurrency from ``levels[index]`` until a level breaks the SLO or :data:`PATIENCE` levels in a
    row add less than :data:`PLATEAU_GAIN` over the best so far."""
    short = 0
    while index + 1 < len(levels):
        index += 1
        point = yield levels[index]
        if point.status != PointStatus.OK or not point.meets(slo):
            return
        if point.throughput < best * (1.0 + PLATEAU_GAIN):
            short += 1
            if short >= PATIENCE:
                return
        else:
            short = 0
        best = max(best, point.throughput)

