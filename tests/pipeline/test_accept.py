from __future__ import annotations

import pytest

from icd.config.schema import AcceptSection
from icd.measure.fidelity import Fidelity
from icd.pipeline.stages.accept import decide
from icd.pipeline.stages.measure import VariantMetrics


def _variant(cos: float) -> VariantMetrics:
    return VariantMetrics("v", Fidelity(cos, cos, 1.0, None, 8), None)


@pytest.mark.parametrize(
    ("current", "candidate", "before", "after", "accepted"),
    [
        (0.995, 0.995, 10.0, 9.0, True),     # same fidelity, lower cost
        (0.995, 0.995, 10.0, 10.0, False),   # no gain
        (0.995, 0.990, 10.0, 5.0, False),    # fidelity dropped
        (0.995, 0.985, 10.0, 5.0, False),    # below the floor while the current is above it
        (0.970, 0.970, 10.0, 9.0, True),     # both below the floor: not worse, and a gain
        (0.970, 0.960, 10.0, 9.0, False),    # both below the floor, worse
    ],
)
def test_accept_rule(current, candidate, before, after, accepted):
    decision = decide(_variant(current), _variant(candidate), AcceptSection(min_cos_mean=0.99), before, after)
    assert decision.accepted is accepted, decision.reason
    assert decision.evidence["gain"] == pytest.approx((before - after) / before)
