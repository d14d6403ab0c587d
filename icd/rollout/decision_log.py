"""Every rollout decision, with its evidence, as one fsync'ed JSON line (``decisions.jsonl``).

The log is how a restarted controller resumes without losing or repeating a decision, so it is read strictly:

* a *torn* last line (no newline: the controller died while writing it) is a decision that was never taken —
  the router was not touched and the status not saved — so it is ignored, and the next append moves it aside to
  ``decisions.jsonl.torn`` before writing;
* any other line that does not parse is corruption: reading raises :class:`icd.errors.ArtefactError` naming
  the file and line instead of skipping it (a skipped decision would silently re-decide a tick).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError

TORN_SUFFIX = ".torn"


class Action(str, Enum):
    """What a tick decided."""

    START = "start"
    """Pre-rollout webhooks passed: route the strategy's first step to the canary."""
    ADVANCE = "advance"
    """Analysis passed: raise the canary weight by one step."""
    HOLD = "hold"
    """Analysis passed: count one more iteration (at max weight, or for ab / mirror / bluegreen)."""
    WAIT_PROMOTION = "wait promotion"
    """Analyses done but a confirm-promotion webhook did not pass: keep the routing, ask again next tick."""
    HALT_NO_DATA = "halt (no data)"
    """No data to judge: keep the routing, count towards ``max_no_data``."""
    FAILED_CHECK = "failed check"
    """Analysis (or a pre-rollout webhook) failed: keep the routing, count towards ``threshold``."""
    ROLLBACK = "rollback"
    """Too many failed checks (or no data for too long): all traffic back to the primary."""
    PROMOTE = "promote"
    """All analyses passed: route all traffic to the canary."""
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
    hooks: list[dict[str, Any]] = field(default_factory=list)
    routes: str = ""
    """What the router was told after this decision (empty when unchanged)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(**{**data, "action": Action(data["action"])})


class DecisionLog:
    """Append-only JSONL; each append is flushed and fsync'ed before the router is touched."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with (self.path.parent / (self.path.name + TORN_SUFFIX)).open("ab") as aside:
            aside.write(data[cut:] + b"\n")
        with self.path.open("r+b") as handle:
            handle.truncate(cut)
            os.fsync(handle.fileno())

    def append(self, decision: Decision) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._drop_torn_tail()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(decision.to_dict(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[Decision]:
        """All decisions; a torn last line (a crash while writing it) is ignored.

        Raises:
            ArtefactError: a complete line that is not a decision (corruption), naming the file and line.
        """
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        complete, torn = lines[:-1], lines[-1]
        out, bad = [], []
        for number, line in enumerate(complete, start=1):
            try:
                out.append(Decision.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                bad.append((number, f"{type(exc).__name__}: {str(exc)[:60]}"))
        if bad:
            where = " and ".join(f"line {n}" for n, _ in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            raise ArtefactError(
                f"{self.path}: {where} {'is' if len(bad) == 1 else 'are'} not a decision ({bad[0][1]}); the log cannot "
                f"be trusted to resume from — inspect it, or move it away to start a new rollout")
        del torn  # no newline: the write was cut by a crash, the decision was never applied
        return out

    def last(self) -> Decision | None:
        decisions = self.read()
        return decisions[-1] if decisions else None
