"""KPI judgement (pure): thresholds, worst sample, 'no data' distinct from OK and from a breach."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icd.monitor.client import Sample
from icd.monitor.kpi import KPIS, Bound, KpiSpec, KpiState, Threshold, any_breached, judge
from icd.monitor.paths import RULES_FILE, monitoring_dir
from icd.monitor.rules import load_rules

SPECS = {spec.key: spec for spec in KPIS}


def _s(value: float, **labels: str) -> Sample:
    return Sample(dict(labels), value)


def test_guide_rows_in_order() -> None:
    assert [s.metric for s in KPIS] == ["P95 Latency", "Error Rate", "GPU Utilization", "Queue Depth",
                                        "Memory Usage", "Cache Hit Rate"]


def test_every_kpi_names_a_shipped_alert_with_its_label() -> None:
    rules = load_rules(monitoring_dir() / RULES_FILE)
    for spec in KPIS:
        assert rules.alerts[spec.alert].labels["kpi"] == spec.key
        assert "icd:" not in rules.expand(spec.expr)


def test_no_samples_is_no_data_not_ok() -> None:
    reading = judge(SPECS["p95_latency"], [])
    assert reading.state is KpiState.NO_DATA and reading.value is None


def test_nan_only_is_no_data() -> None:
    """A ratio of two zero rates (no traffic) is NaN: shown as no data, not as a breach."""
    reading = judge(SPECS["error_rate"], [_s(math.nan, model="m", version="1")])
    assert reading.state is KpiState.NO_DATA
    assert not any_breached([reading])


def test_worst_model_is_reported() -> None:
    reading = judge(SPECS["p95_latency"], [_s(12.0, model="fast", version="1"), _s(310.0, model="slow", version="1")])
    assert reading.state is KpiState.BREACHED
    assert reading.value == 310.0 and reading.where == "slow v1"
    assert any_breached([reading])


def test_at_threshold_is_ok_like_the_alert() -> None:
    assert judge(SPECS["p95_latency"], [_s(200.0, model="m", version="1")]).state is KpiState.OK
    assert judge(SPECS["cache_hit_rate"], [_s(0.95, model="m", version="1")]).state is KpiState.OK
    assert judge(SPECS["cache_hit_rate"], [_s(0.9499, model="m", version="1")]).state is KpiState.BREACHED


@pytest.mark.parametrize(("value", "state"), [(0.5, KpiState.BREACHED), (0.8, KpiState.OK), (0.95, KpiState.BREACHED)])
def test_gpu_utilization_range(value: float, state: KpiState) -> None:
    reading = judge(SPECS["gpu_utilization"], [_s(value, gpu_uuid="GPU-0")])
    assert reading.state is state and reading.where == "GPU GPU-0"


def test_formatting() -> None:
    assert SPECS["error_rate"].format_threshold() == "<= 0.1%"
    assert SPECS["gpu_utilization"].format_threshold() == "70%-90%"
    assert SPECS["cache_hit_rate"].format_threshold() == ">= 95%"
    assert SPECS["p95_latency"].format_threshold() == "<= 200 ms"
    assert SPECS["error_rate"].format_value(0.002) == "0.2 %"


values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(st.one_of(values, st.just(math.nan)), max_size=6), values, values,
       st.sampled_from(list(Bound)))
def test_state_matches_samples(raw: list[float], a: float, b: float, bound: Bound) -> None:
    low, high = min(a, b), max(a, b)
    threshold = Threshold(bound, low=low, high=high)
    spec = KpiSpec("k", "K", "x", threshold, "", "act", "A")
    reading = judge(spec, [_s(v, model=str(i), version="1") for i, v in enumerate(raw)])
    finite = [v for v in raw if math.isfinite(v)]
    if not finite:
        assert reading.state is KpiState.NO_DATA
    elif any(threshold.breached(v) for v in finite):
        assert reading.state is KpiState.BREACHED and threshold.breached(reading.value)
    else:
        assert reading.state is KpiState.OK
