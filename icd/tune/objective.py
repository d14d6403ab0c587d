"""What ``icd tune`` optimises: the highest throughput under a latency SLO, or the lowest cost per million requests.

Both objectives only count points that meet the SLO (:meth:`icd.tune.measurement.LoadPoint.meets`). Cost is a
*projection*, and every report says so: the throughput measured on this host is priced at a cost model's list
price (``deploy/cost_models/*.yaml``) for the share of the instance the configuration occupies, planned at
``utilization`` of the measured capacity::

    projected cost per 1M requests = price_per_hour x share / (throughput x utilization x 3600) x 1e6

``share`` is 1 for an instance with accelerators (the whole machine is rented for the model) and, for a CPU-only
instance with known ``vcpus``, ``cores occupied / vcpus`` where a configuration occupies
``min(host cores, instances x threads)`` cores (threads 0 = the runtime default = every host core).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from icd.measure.metrics import Measurement
from icd.tune.cost_model import CostModel, InstancePrice
from icd.tune.measurement import THROUGHPUT, ConfigResult, LoadPoint, Slo
from icd.tune.space import Candidate

COST = "projected_cost_per_million_requests"


class ObjectiveKind(str, Enum):
    """Which figure ranks configurations (among points that meet the SLO)."""

    THROUGHPUT = "throughput"
    """Highest measured throughput (requests/s)."""
    COST = "cost"
    """Lowest projected cost per million requests under a cost model."""


@dataclass(frozen=True)
class CostBasis:
    """A cost model entry and how a configuration is priced with it."""

    model: CostModel
    path: Path
    price: InstancePrice
    utilization: float
    host_cores: int

    def __post_init__(self) -> None:
        if not 0 < self.utilization <= 1:
            raise ValueError(f"utilization must be in (0, 1], got {self.utilization}")

    def cores(self, candidate: Candidate) -> int:
        """Host cores the configuration occupies."""
        per_instance = candidate.threads or self.host_cores
        return min(self.host_cores, candidate.instance_count * per_instance)

    def share(self, candidate: Candidate) -> float:
        """Fraction of the priced instance the configuration occupies (see module docstring)."""
        if self.price.accelerators == 0 and self.price.vcpus:
            return min(1.0, self.cores(candidate) / self.price.vcpus)
        return 1.0

    def per_million(self, candidate: Candidate, throughput_rps: float) -> float | None:
        planned = throughput_rps * self.utilization
        if planned <= 0:
            return None
        return self.price.price_per_hour * self.share(candidate) / (planned * 3600.0) * 1e6

    def servers_for(self, demand_rps: float, throughput_rps: float) -> int | None:
        """Servers of this configuration needed for ``demand_rps`` at the planned utilization."""
        planned = throughput_rps * self.utilization
        return math.ceil(demand_rps / planned) if planned > 0 else None

    def describe(self) -> dict[str, Any]:
        return {"cost_model": self.model.name, "file": str(self.path), "currency": self.model.currency,
                "instance": self.price.model_dump(), "utilization": self.utilization, "host_cores": self.host_cores,
                "note": self.model.note,
                "how": "projection: throughput measured on this host, priced at the instance's list price per hour "
                       "for the share of it the configuration occupies, run at the target utilization; not a "
                       "measurement on that instance"}


@dataclass(frozen=True)
class Objective:
    """The ranking rule of a search."""

    kind: ObjectiveKind
    slo: Slo
    cost: CostBasis | None = None

    def __post_init__(self) -> None:
        if self.kind == ObjectiveKind.COST and self.cost is None:
            raise ValueError("the cost objective needs a cost model")

    @property
    def tag(self) -> str:
        return COST if self.kind == ObjectiveKind.COST else THROUGHPUT

    def point_score(self, point: LoadPoint) -> Measurement:
        """The objective's figure for one point (unmeasured when the point misses the SLO)."""
        if not point.meets(self.slo):
            return Measurement(self.tag, None, "does not meet the SLO")
        if self.kind == ObjectiveKind.COST:
            assert self.cost is not None
            return Measurement(COST, self.cost.per_million(point.candidate, point.throughput))
        return Measurement(THROUGHPUT, point.throughput)

    def beats(self, incumbent: LoadPoint, tolerance: float = 0.0) -> Callable[[LoadPoint], bool]:
        """A predicate: does a point score better than ``incumbent`` (quick mode's probe)? With ``tolerance``,
        better than ``incumbent`` worsened by that fraction of its figure (a point *near* it)."""
        to_beat = self.point_score(incumbent)
        margin = -tolerance * abs(to_beat.value) if to_beat.measured and to_beat.value is not None else 0.0
        return lambda point: self.point_score(point).is_better_than(to_beat, margin)

    def score(self, result: ConfigResult | None) -> Measurement:
        """The configuration's figure: that of its best point under the SLO."""
        best = result.best(self.slo) if result is not None else None
        return self.point_score(best) if best is not None else Measurement(self.tag, None, "no point meets the SLO")

    def better(self, a: ConfigResult | None, b: ConfigResult | None) -> bool:
        """Whether ``a`` beats ``b`` (a configuration meeting the SLO beats one that does not)."""
        return self.score(a).is_better_than(self.score(b))

    def rank(self, results: list[ConfigResult]) -> list[ConfigResult]:
        """Configurations meeting the SLO, best first."""
        scored = [(r, self.score(r)) for r in results]
        meeting = [(r, s) for r, s in scored if s.measured]
        if not meeting:
            return []
        higher = meeting[0][1].higher_is_better
        return [r for r, _ in sorted(meeting, key=lambda pair: float(pair[1].value or 0.0), reverse=higher)]

    def describe(self) -> str:
        what = "max throughput" if self.kind == ObjectiveKind.THROUGHPUT else "min projected cost per 1M requests"
        return f"{what} under {self.slo.describe()}"
