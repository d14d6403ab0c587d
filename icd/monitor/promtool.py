"""``promtool``: check a configuration, check rules, run rule unit tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from icd.errors import UserError

PROMTOOL = "promtool"


@dataclass(frozen=True)
class PromtoolResult:
    """Exit code and combined output of one promtool run."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _run(*args: str, cwd: Path | None = None) -> PromtoolResult:
    exe = shutil.which(PROMTOOL)
    if exe is None:
        raise UserError("promtool not found on PATH (apt-get install prometheus)")
    proc = subprocess.run(  # noqa: S603 - fixed binary
        [exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )
    return PromtoolResult(proc.returncode, proc.stdout + proc.stderr)


def check_config(path: Path) -> PromtoolResult:
    """``promtool check config PATH`` (also checks the rule files it names)."""
    return _run("check", "config", str(path))


def check_rules(path: Path) -> PromtoolResult:
    """``promtool check rules PATH``."""
    return _run("check", "rules", str(path))


def run_rule_tests(path: Path) -> PromtoolResult:
    """``promtool test rules PATH`` (run from the test file's folder: its rule_files are relative to it)."""
    path = Path(path).resolve()
    return _run("test", "rules", path.name, cwd=path.parent)
