"""Small helpers shared by the ops tests (real HTTP inference bodies, script runner)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def infer_body(batch: int = 1, seq: int = 8) -> dict:
    ids = [101 + (i % 50) for i in range(batch * seq)]
    return {"inputs": [
        {"name": "input_ids", "shape": [batch, seq], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [batch, seq], "datatype": "INT64", "data": [1] * (batch * seq)},
    ]}


def run_script(name: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` exactly as the guide does (python scripts/x.py ...)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *args], cwd=cwd or REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env, check=False)


def run_icd(capsys, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``icd ARGS`` in this process (the same ``main`` the scripts call); output captured with ``capsys``."""
    from icd.cli.main import main

    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["icd", *args], rc, out.out, out.err)
