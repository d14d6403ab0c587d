"""The shipped rules file (``prometheus_rules.yml``): its recording rules, its alerts, shortened variants.

Tests (and demos) cannot wait the production ``for: 5m``; :func:`with_short_for` writes a variant of the same
rules where every ``for:`` is replaced by a short duration — same expressions, same thresholds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from icd.errors import ArtefactError
from icd.io.atomic import write_text_atomic

_RECORD_NAME = re.compile(r"icd:[A-Za-z0-9_:]+")


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule as shipped."""

    name: str
    expr: str
    for_: str
    labels: dict[str, str]


@dataclass(frozen=True)
class RuleSet:
    """The recording rules (name → expression) and alerts of one rules file."""

    recording: dict[str, str]
    alerts: dict[str, AlertRule]

    def expand(self, expr: str) -> str:
        """``expr`` with every ``icd:*`` recording rule replaced by its (recursively expanded) expression.

        Lets ``icd status`` ask a Prometheus that scrapes Triton but does not load icd's rules.
        """

        def substitute(match: re.Match[str]) -> str:
            name = match.group(0)
            if name not in self.recording:
                return name
            return f"({self.expand(self.recording[name])})"

        return _RECORD_NAME.sub(substitute, expr)


def load_rules(path: Path) -> RuleSet:
    """Parse a Prometheus rules file.

    Raises:
        ArtefactError: the file is missing or is not a rules file.
    """
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ArtefactError(f"cannot read rules file {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ArtefactError(f"{path}: not a Prometheus rules file (no 'groups' list)")
    recording: dict[str, str] = {}
    alerts: dict[str, AlertRule] = {}
    for group in doc["groups"]:
        for rule in group.get("rules", []):
            if "record" in rule:
                recording[rule["record"]] = str(rule["expr"])
            elif "alert" in rule:
                alerts[rule["alert"]] = AlertRule(
                    rule["alert"], str(rule["expr"]), str(rule.get("for", "0s")), dict(rule.get("labels", {}))
                )
    return RuleSet(recording, alerts)


def with_short_for(source: Path, target: Path, for_: str = "1s") -> Path:
    """Write a copy of the rules file ``source`` to ``target`` with every alert's ``for:`` set to ``for_``."""
    doc = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" in rule:
                rule["for"] = for_
    header = f"# Generated from {source} with every 'for:' shortened to {for_} (tests/demos only).\n"
    write_text_atomic(target, header + yaml.safe_dump(doc, sort_keys=False))
    return target
