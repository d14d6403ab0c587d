from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from icd.load.histogram import LatencyHistogram


def test_summary_of_known_values():
    h = LatencyHistogram()
    for ms in range(1, 1001):  # 1..1000 ms
        h.record_s(ms / 1000.0)
    s = h.summary_ms()
    assert abs(s["p50"] - 500) <= 1 and abs(s["p99"] - 990) <= 1 and abs(s["max"] - 1000) <= 1
    assert abs(s["mean"] - 500.5) <= 0.5


def test_empty_summary_is_none():
    assert set(LatencyHistogram().summary_ms().values()) == {None}


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(1e-5, 100.0), min_size=1, max_size=300), st.integers(1, 5))
def test_merge_of_parts_equals_one_histogram(values, parts):
    whole = LatencyHistogram()
    pieces = [LatencyHistogram() for _ in range(parts)]
    for i, v in enumerate(values):
        whole.record_s(v)
        pieces[i % parts].record_s(v)
    merged = LatencyHistogram()
    for p in pieces:
        merged.merge(LatencyHistogram.decode(p.encode()))  # through the wire format, as between processes
    assert merged.count == whole.count == len(values)
    pcts = (0.0, 50.0, 90.0, 99.0, 99.9, 100.0)
    assert merged.percentiles_ms(pcts) == whole.percentiles_ms(pcts)
