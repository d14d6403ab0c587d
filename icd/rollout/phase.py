"""The closed sets of a rollout: phases (Flagger's vocabulary, trimmed to what icd does), outcomes, verdicts."""

from __future__ import annotations

from enum import Enum


class RolloutPhase(str, Enum):
    """Where a canary rollout stands; persisted in the status file."""

    INITIALIZED = "Initialized"
    """Spec accepted, the canary gets no traffic yet; the next tick runs the pre-rollout webhooks and routes the
    first step to it."""
    PROGRESSING = "Progressing"
    """The canary takes traffic as its strategy says (weights, header match, mirror, colour); each tick analyses
    it and advances."""
    PROMOTING = "Promoting"
    """Every analysis passed at ``max_weight``: all traffic is being routed to the canary."""
    SUCCEEDED = "Succeeded"
    """Terminal: the canary serves 100 % of traffic."""
    FAILED = "Failed"
    """Terminal: ``threshold`` checks failed (or no data for too long); traffic rolled back to the primary."""

    @property
    def is_terminal(self) -> bool:
        return self in (RolloutPhase.SUCCEEDED, RolloutPhase.FAILED)


class RolloutOutcome(str, Enum):
    """How a finished rollout ended (set with the terminal phase)."""

    PROMOTED = "promoted"
    """Every analysis passed: the canary serves all traffic."""
    ROLLED_BACK = "rolled back"
    """Analyses failed ``threshold`` times: all traffic back to the primary."""
    INCONCLUSIVE = "inconclusive"
    """No data to judge for ``max_no_data`` analyses (no or too little traffic): rolled back, never promoted."""
    REFUSED = "refused"
    """The pre-rollout webhooks failed ``threshold`` times: no traffic was ever routed to the canary."""


class CheckVerdict(str, Enum):
    """Outcome of one metric check (or of an analysis, the worst of its checks)."""

    PASS = "pass"
    """The value is within the check's threshold range."""
    FAIL = "fail"
    """The value is outside the threshold range."""
    NO_DATA = "no data"
    """The provider has no values yet (no traffic, or too few samples): neither pass nor fail."""
