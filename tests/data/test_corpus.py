from __future__ import annotations

import pytest

from icd.data.corpus import load_split


def test_split_is_disjoint_and_deterministic():
    a = load_split(512, 256, seed=0)
    b = load_split(512, 256, seed=0)
    assert a == b
    assert not set(a.calibration) & set(a.heldout)
    assert len(set(a.heldout)) == 256


def test_too_many_texts_is_an_error():
    with pytest.raises(ValueError, match="corpus too small"):
        load_split(10**6, 1)
