"""The metric-spec table and Measurement comparisons."""

from __future__ import annotations

import math

import pytest

from icd.measure.metrics import METRIC_SPECS, Measurement, spec_of


def test_direction_follows_spec():
    assert Measurement("cos_mean", 0.99).is_better_than(Measurement("cos_mean", 0.98))
    assert not Measurement("cos_mean", 0.98).is_better_than(Measurement("cos_mean", 0.99))
    assert Measurement("latency_median_ms", 10.0).is_better_than(Measurement("latency_median_ms", 20.0))
    assert not Measurement("latency_median_ms", 20.0).is_better_than(Measurement("latency_median_ms", 10.0))
    assert not Measurement("speedup", 2.0).is_better_than(Measurement("speedup", 1.9), margin=0.2)


def test_unmeasured_never_wins():
    measured, missing = Measurement("speedup", 1.0), Measurement("speedup", None)
    assert measured.is_better_than(missing) and not missing.is_better_than(measured)
    assert not Measurement("speedup", math.nan).is_better_than(missing)


def test_json_round_trip_and_not_measured():
    m = Measurement("latency_p95_ms", 12.5, "in-process")
    obj = m.to_json()
    assert obj == {"tag": "latency_p95_ms", "value": 12.5, "unit": "ms", "higher_is_better": False, "how": "in-process"}
    assert Measurement.from_json(obj) == m
    assert Measurement("cos_min", None).to_json()["how"] == "not measured"


def test_errors():
    with pytest.raises(KeyError, match="known"):
        Measurement("made_up", 1.0)
    with pytest.raises(ValueError, match="cannot compare"):
        Measurement("cos_mean", 1.0).is_better_than(Measurement("cos_min", 1.0))
    with pytest.raises(ValueError, match="'value'"):
        Measurement.from_json({"tag": "cos_mean"})


def test_table_is_consistent():
    for tag, spec in METRIC_SPECS.items():
        assert spec.tag == tag and spec.unit and spec.how
        assert spec_of(tag) is spec
