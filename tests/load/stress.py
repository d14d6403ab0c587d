"""A stress result checked for consistency with its own evidence (how far a loaded CPU gets is not asserted)."""

from __future__ import annotations

from icd.load.shapes import STRESS_GROWTH


def assert_stress_consistent(stress: dict, start_rate: float) -> None:
    """Rungs grow geometrically from ``start_rate``; every rung but the last passed; a rung passed exactly when its
    p95 met the SLO and its error rate the limit; the reported maximum is the highest passing rung (or None)."""
    steps = stress["steps"]
    assert steps, stress
    assert [s["target_rate"] for s in steps] == [round(start_rate * STRESS_GROWTH**k, 3) for k in range(len(steps))]
    assert all(s["passed"] for s in steps[:-1])
    for step in steps:
        if step["passed"]:
            assert step["p95_ms"] is not None and step["p95_ms"] <= stress["slo_p95_ms"]
            assert step["error_rate"] <= stress["max_error_rate"]
        else:
            assert step["reason"] and stress["broke"]
    passed = [s["target_rate"] for s in steps if s["passed"]]
    assert stress["max_rate_within_slo_rps"] == (max(passed) if passed else None)
