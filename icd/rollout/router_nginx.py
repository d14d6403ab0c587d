"""The nginx traffic router process: start, apply a new :class:`RouterSpec` with a graceful reload, stop.

A reload writes and tests the new configuration (``nginx -t``) before it replaces the live one, then sends
SIGHUP to the master: new workers take new connections while old workers finish their in-flight requests, so no
request is dropped. :meth:`NginxRouter.apply` returns once the router answers with the new generation.

Example:
    router = NginxRouter(Path("runs/router"))
    router.start(RouterSpec(8080, "bert", {"bert_baseline": 90, "bert_icd": 10}, {"blue": ["127.0.0.1:8000"]}, "blue"))
    router.set_weights({"bert_baseline": 50, "bert_icd": 50})
    router.stop()
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from icd.errors import UserError
from icd.io.atomic import write_json_atomic, write_text_atomic
from icd.rollout.router_config import ACCESS_LOG, CONF_FILE, SPEC_FILE, RouterSpec, render_nginx_conf

NGINX_BIN = "nginx"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


class RouterError(UserError):
    """nginx refused a configuration or did not come up / apply it in time."""


def pid_runs(pid: int, needle: str) -> bool:
    """True when process ``pid`` exists and its command line contains ``needle`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return _pid_alive(pid)  # no /proc: trust the pid
    return needle.encode() in cmdline


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NginxRouter:
    """One nginx instance under ``workdir`` (config, pid, logs, ``router.json``)."""

    def __init__(self, workdir: str | Path, nginx_bin: str = NGINX_BIN) -> None:
        self.workdir = Path(workdir).resolve()
        self.nginx_bin = shutil.which(nginx_bin) or nginx_bin
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.workdir / SPEC_FILE

    @property
    def conf_path(self) -> Path:
        return self.workdir / CONF_FILE

    @property
    def pid_path(self) -> Path:
        return self.workdir / "nginx.pid"

    @property
    def access_log(self) -> Path:
        return self.workdir / ACCESS_LOG

    @property
    def spec(self) -> RouterSpec:
        """The last applied spec, read from ``router.json``."""
        if not self.spec_path.exists():
            raise UserError(f"{self.spec_path}: no router state here (start one with `icd router up`)")
        return RouterSpec.load(self.spec_path)

    @property
    def url(self) -> str:
        spec = self.spec
        return f"http://{spec.listen_host}:{spec.listen_port}"

    def master_pid(self) -> int | None:
        """The nginx master's pid, or ``None`` when it is not running."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_runs(pid, "nginx") else None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _write_checked(self, spec: RouterSpec) -> None:
        """Render ``spec``, test it with ``nginx -t`` in a scratch file, then install conf and spec atomically."""
        for sub in ("tmp", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # the workers (user nobody when run as root) traverse it for temp paths
        text = render_nginx_conf(spec, self.workdir, run_as_root=os.geteuid() == 0)
        scratch = self.workdir / f".{CONF_FILE}.check"
        write_text_atomic(scratch, text)
        check = subprocess.run(
            [self.nginx_bin, "-t", "-q", "-p", str(self.workdir), "-c", str(scratch)],
            capture_output=True, text=True, check=False,
        )
        scratch.unlink(missing_ok=True)
        if check.returncode != 0:
            raise RouterError(f"nginx -t rejected generation {spec.generation}: {check.stderr.strip()}")
        write_text_atomic(self.conf_path, text)
        write_json_atomic(self.spec_path, spec.to_dict())

    def start(self, spec: RouterSpec, detach: bool = False) -> RouterSpec:
        """Write the config and start nginx; returns once it serves ``spec``'s generation.

        Args:
            spec: the initial routing.
            detach: leave nginx running after this Python process exits (CLI use); stop it with :meth:`stop`
                from any process via the pid file.
        """
        if self.master_pid() is not None:
            raise UserError(f"{self.workdir}: a router is already running (pid {self.master_pid()})")
        spec.validate()
        self._write_checked(spec)
        out = open(self.workdir / "logs" / "nginx.out", "ab")  # noqa: SIM115 - handed to the child
        self._proc = subprocess.Popen(
            [self.nginx_bin, "-p", str(self.workdir), "-c", str(self.conf_path)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()
        try:
            self.wait_generation(spec.generation)
        except RouterError:
            self.stop()
            raise
        if detach:
            self._proc = None  # later calls find the master through the pid file
        return spec

    def apply(self, change: Callable[[RouterSpec], RouterSpec] | RouterSpec) -> RouterSpec:
        """Apply a new spec (or a function of the current one) with a graceful reload; returns the live spec."""
        current = self.spec
        new = change(current) if callable(change) else change
        new = dataclasses.replace(new, generation=current.generation + 1)
        new.validate()
        pid = self.master_pid()
        if pid is None:
            raise RouterError(f"{self.workdir}: nginx is not running")
        self._write_checked(new)
        os.kill(pid, signal.SIGHUP)
        self.wait_generation(new.generation)
        return new

    def set_weights(self, weights: dict[str, float]) -> RouterSpec:
        """Route by new variant weights (percentages)."""
        return self.apply(lambda s: dataclasses.replace(s, weights=dict(weights)))

    def switch(self, colour: str) -> RouterSpec:
        """Send all traffic to the upstream colour ``colour`` (blue/green switch)."""
        return self.apply(lambda s: dataclasses.replace(s, active=colour))

    def live_generation(self, timeout: float = 2.0) -> int | None:
        """The generation a *new* connection is served by, or ``None`` when the router does not answer."""
        try:
            resp = httpx.get(f"{self.url}/icd/router", timeout=timeout)
        except httpx.HTTPError:
            return None
        return int(resp.json()["generation"]) if resp.status_code == 200 else None

    def wait_generation(self, generation: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until new connections are served with ``generation`` (raise :class:`RouterError` on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RouterError(f"nginx exited with {self._proc.returncode}: {self.error_tail()}")
            if self.live_generation() == generation:
                return
            time.sleep(0.05)
        raise RouterError(f"router did not serve generation {generation} within {timeout}s: {self.error_tail()}")

    def error_tail(self, lines: int = 5) -> str:
        log = self.workdir / "error.log"
        if not log.exists():
            return "(no error.log)"
        tail = [line.split("] ", 1)[-1] for line in log.read_text(errors="replace").splitlines()[-lines:]]
        return " | ".join(dict.fromkeys(tail))

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Graceful stop (SIGQUIT: finish in-flight requests), SIGKILL after ``timeout``; waits for the master."""
        pid = self.master_pid()
        if pid is None:
            self._proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
            return
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> NginxRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
