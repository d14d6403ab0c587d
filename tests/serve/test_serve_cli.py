"""`icd serve` as a process: ready line, Ctrl-C (SIGINT) stops Triton cleanly, no orphan (synthetic model)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.triton import remove_orphan_stub_regions


def _start_serve(repo: Path, free_port, stderr=subprocess.STDOUT) -> tuple[subprocess.Popen, list[str], int]:
    """``icd serve`` on ``repo`` as a process, read up to its ready line; (process, lines said, Triton's pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "icd.cli.main", "serve", "--model-repository", str(repo),
         "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120  # a bound for a loaded machine, not a timing assertion
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("ready;"):
            break
    pids = [line.split("pid ")[1].split(")")[0] for line in lines if "Triton (pid " in line]
    return proc, lines, int(pids[0]) if pids else 0


@pytest.mark.e2e
def test_ctrl_c_stops_icd_serve_and_its_triton(triton_repo_small, free_port):
    proc, lines, pid = _start_serve(triton_repo_small, free_port)
    try:
        assert any("model echo_delay v1: READY" in line for line in lines), lines
        assert pid, lines
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "\n".join(lines) + out
    assert "received SIGINT" in out and "Triton stopped" in out
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.mark.e2e
def test_triton_killed_under_icd_serve_is_one_line_with_how_and_the_log(triton_repo_small, free_port):
    import os

    proc, lines, pid = _start_serve(triton_repo_small, free_port, stderr=subprocess.PIPE)
    try:
        assert pid, lines
        log = next(line for line in lines if line.strip().startswith("log ")).split("log", 1)[1].strip()
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        remove_orphan_stub_regions()  # the killed Triton could not unlink its shared memory
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err
    assert f"icd: error: tritonserver (pid {pid}) was killed by SIGKILL while serving; its log: {log}; " in err
