"""The closed set of canary rollout phases (Flagger's vocabulary, trimmed to what icd does)."""

from __future__ import annotations

from enum import Enum


class RolloutPhase(str, Enum):
    """Where a canary rollout stands; persisted in the status file."""

    INITIALIZED = "Initialized"
    """Spec accepted, the canary gets no traffic yet; the next tick routes the first step to it."""
    PROGRESSING = "Progressing"
    """The canary takes ``canary_weight`` % of traffic; each tick analyses it and steps the weight up."""
    PROMOTING = "Promoting"
    """Every analysis passed at ``max_weight``: all traffic is being routed to the canary."""
    SUCCEEDED = "Succeeded"
    """Terminal: the canary serves 100 % of traffic."""
    FAILED = "Failed"
    """Terminal: ``threshold`` checks failed (or no data for too long); traffic rolled back to the primary."""

    @property
    def is_terminal(self) -> bool:
        return self in (RolloutPhase.SUCCEEDED, RolloutPhase.FAILED)


class CheckVerdict(str, Enum):
    """Outcome of one metric check (or of an analysis, the worst of its checks)."""

    PASS = "pass"
    """The value is within the check's threshold range."""
    FAIL = "fail"
    """The value is outside the threshold range."""
    NO_DATA = "no data"
    """The provider has no values yet (no traffic, or too few samples): neither pass nor fail."""
