"""Pick the runtime variant to serve: the fastest whose fidelity meets the floor (``serve.min_cos``, ``min_nn``).

Pure functions over a table of measured rows, so the rule is tested on small tables. The agreement a row carries
is the one that fits the model's task: nearest-neighbour agreement for embedding models, argmax agreement for
classifiers (``agreement`` names it in the reasons: "NN" or "argmax").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProfileRow:
    """One measured variant: fidelity vs the reference fp32 model and in-process median latency.

    ``error`` is set (and the figures None) when the variant could not be built or verified.
    """

    variant: str
    cos_mean: float | None
    cos_min: float | None
    agreement: float | None  # the task's agreement: NN (embedding models) or argmax (classifiers)
    latency_median_ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """The chosen variant and why."""

    variant: str
    reason: str
    meets_floor: bool


def meets(row: ProfileRow, min_cos: float, min_nn: float) -> bool:
    """The row was measured and its cos mean and agreement reach the floor."""
    return (row.error is None and row.cos_mean is not None and row.agreement is not None
            and row.latency_median_ms is not None and row.cos_mean >= min_cos and row.agreement >= min_nn)


def choose(rows: Sequence[ProfileRow], min_cos: float, min_nn: float, agreement: str = "NN") -> Choice:
    """The fastest row meeting the floor; if none does, the most faithful measured row (said in the reason).

    Raises:
        ValueError: no row was measured at all.
    """
    measured = [r for r in rows if r.error is None and r.latency_median_ms is not None and r.cos_mean is not None]
    if not measured:
        raise ValueError("choose: no variant was measured")
    passing = [r for r in measured if meets(r, min_cos, min_nn)]
    if passing:
        best = min(passing, key=lambda r: (r.latency_median_ms, r.variant))
        return Choice(best.variant, f"fastest of {len(passing)} variant(s) with cos mean >= {min_cos} and "
                                    f"{agreement} >= {min_nn} ({best.latency_median_ms:.1f} ms)", True)
    best = max(measured, key=lambda r: (r.cos_mean, r.agreement or 0.0, -r.latency_median_ms))
    return Choice(best.variant, f"no variant meets cos mean >= {min_cos} and {agreement} >= {min_nn}; the most faithful "
                                f"(cos mean {best.cos_mean:.5f})", False)
