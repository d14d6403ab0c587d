"""Every canary decision, with its evidence, as one fsync'ed JSON line (``decisions.jsonl``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class Action(str, Enum):
    """What a tick decided."""

    START = "start"
    """Route the first step of traffic to the canary."""
    ADVANCE = "advance"
    """Analysis passed: raise the canary weight by one step."""
    HOLD = "hold"
    """Analysis passed at max weight: stay until enough iterations passed."""
    HALT_NO_DATA = "halt (no data)"
    """No data to judge: keep the weight, count towards ``max_no_data``."""
    FAILED_CHECK = "failed check"
    """Analysis failed: keep the weight, count towards ``threshold``."""
    ROLLBACK = "rollback"
    """Too many failed checks (or no data for too long): all traffic back to the primary."""
    PROMOTE = "promote"
    """All analyses passed at max weight: route all traffic to the canary."""
    FINALISE = "finalise"
    """Promotion done: the rollout succeeded."""


@dataclass(frozen=True)
class Decision:
    """One tick's decision; ``status_after`` lets a restarted controller finish a half-applied tick."""

    tick: int
    time: float
    action: Action
    reason: str
    phase_before: str
    phase_after: str
    weight_before: float
    weight_after: float
    analysis: dict[str, Any] | None
    status_after: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{**data, "action": Action(data["action"])})


class DecisionLog:
    """Append-only JSONL; each append is flushed and fsync'ed before the router is touched."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, decision: Decision) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not self.path.read_bytes().endswith(b"\n")
        with self.path.open("a", encoding="utf-8") as handle:
            if torn:  # a crash cut the previous line: end it so this one parses
                handle.write("\n")
            handle.write(json.dumps(decision.to_dict(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[Decision]:
        """All complete decisions (a torn last line from a crash is ignored)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Decision.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def last(self) -> Decision | None:
        decisions = self.read()
        return decisions[-1] if decisions else None
