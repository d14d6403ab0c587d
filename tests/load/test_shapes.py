from __future__ import annotations

import pytest

from icd.errors import UserError
from icd.load.aggregate import IntervalRow
from icd.load.histogram import LatencyHistogram
from icd.load.shapes import BurstyShape, ConstantShape, RealisticShape, StressShape, make_shape


def _row(t: float, ok: int, latency_ms: float, errors: int = 0) -> IntervalRow:
    hist = LatencyHistogram()
    for _ in range(ok):
        hist.record_s(latency_ms / 1000)
    return IntervalRow("m", int(t) - 1, t, 1.0, False, None, ok + errors, ok, errors, 0, ok + errors, ok, errors,
                       latency_ms, latency_ms, latency_ms, latency_ms, hist)


def test_constant_and_end():
    shape = ConstantShape(7.0, 10.0)
    assert shape.tick(0) == shape.tick(9.9) == 7.0
    assert shape.tick(10.0) is None


def test_bursty_has_periodic_spikes():
    shape = BurstyShape(10.0, 40.0, period_s=10.0, burst_s=2.0, duration_s=60.0)
    rates = [shape.tick(t + 0.5) for t in range(60)]
    spikes = [t for t, r in enumerate(rates) if r == 40.0]
    assert spikes == [5, 6, 15, 16, 25, 26, 35, 36, 45, 46, 55, 56]
    assert all(r in (10.0, 40.0) for r in rates)


def test_realistic_is_a_business_day():
    shape = RealisticShape(100.0, 240.0)  # 10 s per simulated hour
    night, morning, lunch, afternoon = (shape.tick(h * 10.0) for h in (3, 10, 12, 15))
    assert night < 15 and morning == pytest.approx(100) and lunch < morning and afternoon == pytest.approx(100)
    assert shape.tick(240.0) is None


def test_stress_ramps_until_slo_breaks():
    shape = StressShape(10.0, 100.0, growth=2.0, step_s=2.0, slo_p95_ms=50.0)
    assert [shape.tick(t) for t in (0, 2, 4)] == [10.0, 20.0, 40.0]
    for t, ok, lat in [(1, 10, 5), (2, 10, 5), (3, 20, 8), (4, 20, 8), (5, 40, 120), (6, 40, 130)]:
        shape.observe(_row(t, ok, lat))
    assert shape.broken and shape.tick(6.5) is None
    res = shape.result()
    assert res["max_rate_within_slo_rps"] == 20.0 and "SLO" in res["break_reason"]
    assert [s["passed"] for s in res["steps"]] == [True, True, False]


def test_stress_breaks_on_errors():
    shape = StressShape(10.0, 100.0, growth=2.0, step_s=1.0, slo_p95_ms=50.0)
    shape.observe(_row(1, 5, 5, errors=5))
    assert shape.broken and "error rate" in shape.result()["break_reason"]
    assert shape.result()["max_rate_within_slo_rps"] is None


def test_unknown_pattern_is_a_user_error():
    with pytest.raises(UserError, match="--traffic-pattern 'spiky'.*constant, bursty, realistic, stress"):
        make_shape("spiky", 10, 60)
    with pytest.raises(UserError):
        make_shape("constant", 0, 60)
