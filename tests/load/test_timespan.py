from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icd.load.timespan import parse_timespan


@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300.0), ("2.5", 2.5), ("45s", 45.0), ("5m", 300.0), ("1h30m", 5400.0), ("1h 2m 3s", 3723.0),
    ("250ms", 0.25), (12, 12.0),
])
def test_parses(text, seconds):
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "m5", "1h30", "-3", "5m-2s"])
def test_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_timespan(text)


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_hms_composition(h, m, s):
    assert parse_timespan(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s
