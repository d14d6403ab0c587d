"""`icd serve` as a process: ready line, Ctrl-C (SIGINT) stops Triton cleanly, no orphan (synthetic model)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_ctrl_c_stops_icd_serve_and_its_triton(triton_repo_small, free_port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "icd.cli.main", "serve", "--model-repository", str(triton_repo_small),
         "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("ready;"):
                break
        assert any("model echo_delay v1: READY" in line for line in lines), lines
        pid = int(next(line for line in lines if "Triton (pid " in line).split("pid ")[1].split(")")[0])
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "\n".join(lines) + out
    assert "received SIGINT" in out and "Triton stopped" in out
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
