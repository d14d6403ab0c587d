"""One nginx master process under a folder: test a configuration, start it, reload it, stop it (by PID).

The one nginx process manager of icd: the traffic router (:class:`icd.rollout.router_nginx.NginxRouter`) and the
TLS / scale-out proxy (:class:`icd.ops.nginx_proxy.NginxProxy`) both run their generated configuration through it.
The configuration must say ``daemon off;`` and ``pid <workdir>/nginx.pid;``: nginx then runs as a child process
(its own session, so a Ctrl-C of the caller does not reach it) and can be found again from any process through
the pid file.

* :meth:`NginxProcess.check` runs ``nginx -t`` on a scratch copy — a rejected configuration never replaces a
  working one;
* :meth:`NginxProcess.start` refuses a listen port that is in use *before* writing anything, and removes what it
  wrote when nginx does not come up (no stale state folder);
* :meth:`NginxProcess.reload` installs a checked configuration atomically and sends SIGHUP (graceful: old workers
  finish their requests), then waits until the new configuration answers *and* every old worker has stopped
  accepting ("worker process is shutting down", or gone): on a loaded host an old worker can otherwise still
  accept a new connection for a moment and serve it with the old routing;
* :meth:`NginxProcess.stop` sends SIGQUIT (graceful) and SIGKILL after a timeout, and waits for the master.

Example:
    proc = NginxProcess(Path("runs/proxy"))
    proc.start(conf_text, listen=[("127.0.0.1", 8443)], ready=lambda: port_open(8443))
    proc.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from icd.errors import UserError
from icd.io.atomic import write_text_atomic
from icd.io.ports import port_in_use
from icd.monitor.process import pid_alive

NGINX_BIN = "nginx"
CONF_FILE = "nginx.conf"
PID_FILE = "nginx.pid"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05


class NginxError(UserError):
    """nginx is missing, refused a configuration, or did not come up / apply it in time."""


def pid_runs(pid: int, needle: str) -> bool:
    """True when process ``pid`` exists and its command line contains ``needle`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return pid_alive(pid)  # no /proc: trust the pid
    return needle.encode() in cmdline


class NginxProcess:
    """An nginx master whose configuration, pid file, temp and log files live under ``workdir``."""

    def __init__(self, workdir: str | Path, nginx_bin: str = NGINX_BIN) -> None:
        self.workdir = Path(workdir).resolve()
        self.nginx_bin = nginx_bin
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / CONF_FILE

    @property
    def pid_path(self) -> Path:
        return self.workdir / PID_FILE

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    def binary(self) -> str:
        """The nginx executable (raises :class:`NginxError` when none is installed)."""
        found = shutil.which(self.nginx_bin)
        if found is None:
            raise NginxError(f"{self.nginx_bin}: not found on PATH (apt-get install nginx; `make setup` does)")
        return found

    def master_pid(self) -> int | None:
        """The master's pid, or ``None`` when it is not running."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_runs(pid, "nginx") else None

    def _dirs(self) -> None:
        for sub in ("tmp", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # workers (user nobody when run as root) traverse it for temp paths

    def check(self, text: str) -> None:
        """Test ``text`` with ``nginx -t`` in a scratch file (raises :class:`NginxError` with nginx's reason)."""
        self._dirs()
        scratch = self.workdir / f".{CONF_FILE}.check"
        write_text_atomic(scratch, text)
        try:
            result = subprocess.run(  # noqa: S603 - our own binary and file
                [self.binary(), "-t", "-q", "-p", str(self.workdir), "-e", str(self.error_log), "-c", str(scratch)],
                capture_output=True, text=True, check=False)
        finally:
            scratch.unlink(missing_ok=True)
        if result.returncode != 0:
            raise NginxError(f"nginx -t rejected the configuration for {self.workdir}: {result.stderr.strip()[-400:]}")

    def start(self, text: str, listen: Sequence[tuple[str, int]], ready: Callable[[], bool],
              timeout_s: float = READY_TIMEOUT_S, on_written: Callable[[], None] | None = None) -> int:
        """Check and install ``text``, start nginx and wait until ``ready()``; returns the master pid.

        Args:
            text: the configuration (``daemon off``, pid file in ``workdir``).
            listen: every ``(host, port)`` it listens on — checked free before anything is written.
            ready: true once nginx serves what it should (e.g. answers the expected generation).
            timeout_s: how long to wait for ``ready``.
            on_written: called after the configuration is installed (write companion state files there).

        Raises:
            NginxError: a port is in use, nginx is missing, refuses the configuration, exits or is not ready in
                time. Whatever this call wrote is removed again (a folder it created is removed whole).
        """
        if self.master_pid() is not None:
            raise NginxError(f"{self.workdir}: nginx is already running (pid {self.master_pid()})")
        for host, port in listen:
            if port_in_use(port, host):
                raise NginxError(f"port {port} on {host} is in use: choose another port (nothing was started)")
        binary = self.binary()
        created = not self.workdir.exists()
        before = set(self.workdir.iterdir()) if not created else set()
        try:
            self.check(text)
            write_text_atomic(self.conf_path, text)
            if on_written is not None:
                on_written()
            out = open(self.workdir / "logs" / "nginx.out", "ab")  # noqa: SIM115 - handed to the child
            self._proc = subprocess.Popen(  # noqa: S603
                [binary, "-p", str(self.workdir), "-e", str(self.error_log), "-c", str(self.conf_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            out.close()
            self.wait(ready, timeout_s, "start")
        except BaseException:
            self.stop()
            self._remove_written(created, before)
            raise
        return self._proc.pid

    def _remove_written(self, created: bool, before: set[Path]) -> None:
        if created:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for path in set(self.workdir.iterdir()) - before:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def detach(self) -> None:
        """Forget the child handle: later calls find the master through the pid file (CLI use)."""
        self._proc = None

    def workers(self) -> set[int]:
        """PIDs of the master's children (its worker processes)."""
        pid = self.master_pid()
        if pid is None:
            return set()
        try:
            return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return set()

    @staticmethod
    def _accepting(pid: int) -> bool:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return pid_alive(pid) and b"shutting down" not in title

    def reload(self, text: str, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Check, install atomically and SIGHUP ``text``; wait until ``ready()`` and no old worker accepts."""
        pid = self.master_pid()
        if pid is None:
            raise NginxError(f"{self.workdir}: nginx is not running")
        self.check(text)
        write_text_atomic(self.conf_path, text)
        old = self.workers()
        os.kill(pid, signal.SIGHUP)
        self.wait(lambda: ready() and not any(self._accepting(w) for w in old), timeout_s, "reload")

    def wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise NginxError(f"nginx exited with {self._proc.returncode}: {self.error_tail()}")
            if ready():
                return
            time.sleep(_POLL_S)
        raise NginxError(f"nginx did not {what} within {timeout_s:g}s: {self.error_tail()}")

    def error_tail(self, lines: int = 5) -> str:
        """The last lines of nginx's error log (deduplicated, one line)."""
        if not self.error_log.exists():
            return "(no error.log)"
        tail = [line.split("] ", 1)[-1] for line in self.error_log.read_text(errors="replace").splitlines()[-lines:]]
        return " | ".join(dict.fromkeys(tail)) or "(error.log empty)"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Graceful stop (SIGQUIT), SIGKILL after ``timeout_s``; waits for the master. True when one ran."""
        pid = self.master_pid()
        proc, self._proc = self._proc, None
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if proc is not None:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return True
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True
