"""Search strategies: generators that yield :class:`Trial` s and are sent each trial's :class:`ConfigResult`.

* :func:`brute_force` — every possible candidate of the space, in grid order (Model Analyzer's brute search).
* :func:`hill_climb` — *quick* mode: from a start point, measure every neighbour (one step up or down along
  one dimension, or a trade of one thread step for one instance), move to the best if it beats the current
  configuration under the objective, stop when none does. Each neighbour is first *probed* at the concurrency where the current configuration peaked: one
  measurement, unless it meets the SLO and beats the current configuration there (then its sweep goes on upward).

A strategy never measures: the coordinator does, and may answer from a checkpoint, so a strategy replays
identically when a run resumes.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from enum import Enum

from icd.tune.measurement import ConfigResult, LoadPoint
from icd.tune.objective import Objective
from icd.tune.space import Candidate, Enumeration, SearchSpace


class SearchMode(str, Enum):
    """How the space is searched."""

    BRUTE = "brute"
    """Measure every possible configuration."""
    QUICK = "quick"
    """Hill climbing from the model's current configuration (a fraction of brute force's measurements)."""


@dataclass(frozen=True)
class Trial:
    """A configuration to measure, the concurrency level index its sweep starts at, and (quick mode) the
    incumbent's best point it must beat there to be swept further (:func:`icd.tune.concurrency.concurrency_sweep`)."""

    candidate: Candidate
    start_level: int = 0
    incumbent: LoadPoint | None = None


Strategy = Generator[Trial, ConfigResult, None]


def brute_force(enumeration: Enumeration) -> Strategy:
    """Every candidate, in order; results are not needed to decide."""
    for candidate in enumeration.candidates:
        yield Trial(candidate)


def nearest_index(space: SearchSpace, candidate: Candidate) -> tuple[int, ...]:
    """Per dimension, the index of the space value nearest to ``candidate``'s (the hill climb's start)."""
    wanted = (candidate.instance_count, candidate.threads, candidate.max_batch_size,
              list(candidate.preferred_batch_sizes), candidate.queue_delay_us, candidate.version)
    index = []
    for dim, (values, want) in enumerate(zip(space.dimensions(), wanted, strict=True)):
        if dim in SearchSpace.CATEGORICAL:
            index.append(next((i for i, v in enumerate(values) if v == want), 0))
        else:
            index.append(min(range(len(values)), key=lambda i: (abs(values[i] - want), values[i])))
    return tuple(index)


INSTANCES, THREADS = 0, 1
"""Coordinates of the instance count and the threads per instance (:meth:`SearchSpace.dimensions`)."""


def _neighbours(index: tuple[int, ...], sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """One step up or down along an ordered dimension; any other value of a categorical one; and the trades of
    threads for instances: one instance more with one thread step fewer, and the reverse. The cores a
    configuration uses are instances × threads, so on a small host the better split of the same cores (two
    instances of one thread instead of one of two) is only reachable through a worse point along either axis
    alone (one more instance oversubscribes, one thread fewer leaves a core idle): a diagonal step crosses it."""
    out = []
    for dim, size in enumerate(sizes):
        moves = range(size) if dim in SearchSpace.CATEGORICAL else (index[dim] + 1, index[dim] - 1)
        for moved in moves:
            if 0 <= moved < size and moved != index[dim]:
                out.append(index[:dim] + (moved,) + index[dim + 1:])
    for step in (1, -1):
        instances, threads = index[INSTANCES] + step, index[THREADS] - step
        if 0 <= instances < sizes[INSTANCES] and 0 <= threads < sizes[THREADS]:
            out.append((instances, threads) + index[THREADS + 1:])
    return out


def _probe(result: ConfigResult, objective: Objective, levels: Sequence[int]) -> tuple[int, LoadPoint | None]:
    """Where a neighbour's sweep starts (the incumbent's peak level) and the point it must beat there."""
    best = result.best(objective.slo)
    if best is None or best.concurrency not in levels:
        return 0, None
    return levels.index(best.concurrency), best


def hill_climb(space: SearchSpace, objective: Objective, start: Candidate) -> Strategy:
    """Steepest-ascent hill climbing over the space's coordinates (see module docstring)."""
    sizes = [len(d) for d in space.dimensions()]
    levels = space.concurrency
    index = nearest_index(space, start)
    candidate, _ = space.at(index)
    while candidate is None:  # the nearest point is impossible: take the first possible one instead
        index = next(i for i in itertools.product(*(range(n) for n in sizes)) if space.at(i)[0] is not None)
        candidate, _ = space.at(index)
    visited: set[Candidate] = {candidate}
    current = yield Trial(candidate)
    while True:
        best_index, best_result = None, current
        seed, incumbent = _probe(current, objective, levels)
        for neighbour in _neighbours(index, sizes):
            other, _reason = space.at(neighbour)
            if other is None or other in visited:
                continue
            visited.add(other)
            result = yield Trial(other, seed, incumbent)
            if objective.better(result, best_result):
                best_index, best_result = neighbour, result
        if best_index is None:
            return
        index, current = best_index, best_result

