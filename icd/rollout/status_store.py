"""The rollout's persisted status (Flagger's ``CanaryStatus``), written atomically after every tick.

The state file holds the spec and the status, so a restarted controller needs nothing else to resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError
from icd.io.atomic import write_json_atomic
from icd.rollout.canary_spec import CanarySpec
from icd.rollout.phase import RolloutPhase

STATE_FILE = "canary_state.json"
DECISIONS_FILE = "decisions.jsonl"


@dataclass
class CanaryStatus:
    """Where the rollout stands after ``tick`` completed ticks."""

    phase: RolloutPhase = RolloutPhase.INITIALIZED
    """Current phase."""
    canary_weight: float = 0.0
    """Traffic % routed to the canary now."""
    failed_checks: int = 0
    """Failed analyses so far (rollback at the spec's threshold)."""
    no_data_checks: int = 0
    """Consecutive analyses without data."""
    iterations: int = 0
    """Passing analyses at max weight."""
    tick: int = 0
    """Completed ticks; decision ``tick + 1`` is the next one."""
    updated: float = 0.0
    """Epoch seconds of the last completed tick."""
    history: list[str] = field(default_factory=list)
    """Phases entered, in order."""
    outcome: str = ""
    """Set with the terminal phase: a :class:`icd.rollout.phase.RolloutOutcome` value."""
    reason: str = ""
    """The last decision's reason."""
    post_rollout: list[dict[str, Any]] = field(default_factory=list)
    """Results of the post-rollout webhooks (run once the final routing is applied)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phase": self.phase.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryStatus:
        return cls(**{**data, "phase": RolloutPhase(data["phase"])})


class StatusStore:
    """``<state_dir>/canary_state.json``: ``{"spec": ..., "status": ...}``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / STATE_FILE

    def exists(self) -> bool:
        return self.path.exists()

    def init(self, spec: CanarySpec) -> CanaryStatus:
        """Create a fresh state (refuses to overwrite an unfinished rollout)."""
        if self.exists():
            _, status = self.load()
            if not status.phase.is_terminal:
                raise ArtefactError(f"{self.path}: a rollout is in progress (phase {status.phase.value}); resume it")
        status = CanaryStatus()
        self.save(spec, status)
        return status

    def load(self) -> tuple[CanarySpec, CanaryStatus]:
        try:
            data = json.loads(self.path.read_text())
            return CanarySpec.model_validate(data["spec"]), CanaryStatus.from_dict(data["status"])
        except FileNotFoundError:
            raise ArtefactError(f"{self.path}: no canary state (start one with `icd canary deploy`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtefactError(f"{self.path}: unreadable canary state: {exc}") from exc

    def save(self, spec: CanarySpec, status: CanaryStatus) -> None:
        write_json_atomic(self.path, {"spec": spec.model_dump(mode="json"), "status": status.to_dict()})
