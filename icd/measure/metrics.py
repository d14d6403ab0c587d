"""The one table of metric specs, and typed measurements.

A metric's ``tag`` is its JSON key, CSV column and Prometheus suffix. A :class:`Measurement` carries its value,
its spec (unit, direction) and how it was measured; compare two with :meth:`Measurement.is_better_than`, never
with a hand-written ``<``. JSON form (what ``metrics.json`` holds):
``{"tag", "value", "unit", "higher_is_better", "how"}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is: its tag, unit, direction and how it is measured."""

    tag: str
    unit: str
    higher_is_better: bool
    how: str


def _spec(tag: str, unit: str, higher_is_better: bool, how: str) -> tuple[str, MetricSpec]:
    return tag, MetricSpec(tag, unit, higher_is_better, how)


METRIC_SPECS: dict[str, MetricSpec] = dict(
    [
        _spec("cos_mean", "ratio", True, "mean cosine of candidate vs reference outputs on held-out texts"),
        _spec("cos_min", "ratio", True, "minimum cosine of candidate vs reference outputs on held-out texts"),
        _spec("nn_agreement", "fraction", True, "fraction of held-out texts whose nearest other text is unchanged"),
        _spec("argmax_agreement", "fraction", True, "fraction of held-out texts with the same predicted class"),
        _spec("latency_median_ms", "ms", False, "median in-process forward wall time after warm-up"),
        _spec("latency_p95_ms", "ms", False, "95th percentile in-process forward wall time after warm-up"),
        _spec("speedup", "x", True, "baseline median latency / candidate median latency, same harness"),
        _spec("efficacy_mean", "percent", True, "mean N:M permutation efficacy over weight matrices"),
        _spec("sparsity", "fraction", True, "fraction of zero weights in the transformed Linears"),
        _spec("throughput_rps", "requests/s", True, "completed requests per second under load"),
        _spec("error_rate", "fraction", False, "failed requests / all requests"),
        _spec("served_latency_p50_ms", "ms", False, "median client-side request latency under load, served model"),
        _spec("served_latency_p95_ms", "ms", False, "95th percentile client-side request latency under load"),
        _spec("served_latency_p99_ms", "ms", False, "99th percentile client-side request latency under load"),
        _spec("projected_cost_per_million_requests", "currency", False,
              "projection: list price of the resources a configuration occupies / (measured throughput x planned "
              "utilization); not measured on the priced instance"),
        _spec("cache_hit_rate", "fraction", True, "cache hits / cache lookups"),
        _spec("cost_locality_before", "cost", False, "locality cost J of the identity order"),
        _spec("cost_locality_after", "cost", False, "locality cost J of the solved order"),
    ]
)


def spec_of(tag: str) -> MetricSpec:
    """The spec of ``tag``; KeyError listing the known tags."""
    if tag not in METRIC_SPECS:
        raise KeyError(f"unknown metric tag {tag!r}; known: {sorted(METRIC_SPECS)}")
    return METRIC_SPECS[tag]


@dataclass(frozen=True)
class Measurement:
    """One measured value of a metric in :data:`METRIC_SPECS`; ``value`` None means "not measured"."""

    tag: str
    value: float | None
    how: str = ""

    def __post_init__(self) -> None:
        spec_of(self.tag)

    @property
    def spec(self) -> MetricSpec:
        return spec_of(self.tag)

    @property
    def unit(self) -> str:
        return self.spec.unit

    @property
    def higher_is_better(self) -> bool:
        return self.spec.higher_is_better

    @property
    def measured(self) -> bool:
        return self.value is not None and not math.isnan(self.value)

    def is_better_than(self, other: Measurement, margin: float = 0.0) -> bool:
        """True when this value beats ``other``'s by more than ``margin`` in the metric's direction.

        An unmeasured value is never better; a measured one beats an unmeasured one. Raises ValueError when the
        tags differ.
        """
        if other.tag != self.tag:
            raise ValueError(f"is_better_than: cannot compare {self.tag!r} with {other.tag!r}")
        mine = self.value if self.measured else None
        theirs = other.value if other.measured else None
        if mine is None:
            return False
        if theirs is None:
            return True
        gain = mine - theirs if self.higher_is_better else theirs - mine
        return gain > margin

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "value": self.value if self.measured else None,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "how": self.how or ("not measured" if not self.measured else self.spec.how),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Measurement:
        """Parse the JSON form; ValueError naming a missing key, KeyError for an unknown tag."""
        for key in ("tag", "value"):
            if key not in obj:
                raise ValueError(f"measurement: missing key {key!r} in {sorted(obj)}")
        value = obj["value"]
        return cls(tag=str(obj["tag"]), value=None if value is None else float(value), how=str(obj.get("how", "")))
