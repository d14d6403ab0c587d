"""A local server process (prometheus, alertmanager) started in its own session and stopped by PID.

``LocalProcess`` owns a child it started (so it can ``wait()`` for it); :func:`stop_pid` stops a server started
by an earlier ``icd monitor up`` from its recorded PID, after checking that the PID still runs the expected
binary (PIDs are reused).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from icd.errors import UserError
from icd.io.ports import port_in_use

_LOG_TAIL_CHARS = 600
_POLL_S = 0.1


def log_tail(path: Path | None, chars: int = _LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file, on one line ('' when there is none)."""
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")[-chars:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())




def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_runs(pid: int, executable: str) -> bool:
    """Whether ``pid`` is alive and runs ``executable``: a program of that name, or ``python -m <executable>``."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return Path(argv[0]).name == executable or argv[1:3] == ["-m", executable]


def stop_pid(pid: int, executable: str, timeout_s: float = 15.0) -> bool:
    """SIGTERM ``pid`` if it still runs ``executable``; wait, then SIGKILL. Returns whether it was running."""
    if not pid_runs(pid, executable):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(_POLL_S)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(_POLL_S)
    return True


class LocalProcess:
    """One server process: started with its output in ``log_file``, ready when ``ready_url`` answers 200.

    Args:
        name: what it is, for messages ("prometheus").
        argv: the full command line (no shell).
        log_file: stdout + stderr of the process.
        ready_url: polled until it answers HTTP 200.
        port: the port it listens on (checked free before starting: a ready answer must come from this process).
    """

    def __init__(self, name: str, argv: Sequence[str], log_file: Path, ready_url: str, port: int) -> None:
        self.name = name
        self.port = port
        self.argv = list(argv)
        self.log_file = Path(log_file)
        self.ready_url = ready_url
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the process and wait until it is ready.

        Raises:
            UserError: the port is taken, the binary is missing, the process exited, or it was not ready in time
                (with its log tail).
        """
        if port_in_use(self.port):
            raise UserError(f"{self.name}: port {self.port} is already in use on 127.0.0.1; choose another port")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            try:
                self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                    self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            except FileNotFoundError as exc:
                raise UserError(f"{self.name}: executable not found: {self.argv[0]} (apt-get install it)") from exc
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll() if self._proc else -1
                if code is not None:
                    raise UserError(f"{self.name} exited with code {code} while starting: {log_tail(self.log_file)}")
                try:
                    if client.get(self.ready_url).status_code == 200 and self._proc.poll() is None:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(_POLL_S)
        tail = log_tail(self.log_file)
        self.stop()
        raise UserError(f"{self.name} not ready on {self.ready_url} after {timeout_s:.0f} s: {tail}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, SIGKILL if needed, reap. Idempotent; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode
