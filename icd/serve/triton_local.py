"""``TritonServer``: the real ``tritonserver`` (bundled in nvidia-pytriton) run as a local process on 127.0.0.1.

Example:
    >>> with TritonServer(Path("deploy/triton/models"), http_port=18000, grpc_port=18001,
    ...                   metrics_port=18002) as server:          # doctest: +SKIP
    ...     print(server.http_url, server.pid)

``start()`` waits for ``/v2/health/ready``; every failure (binary missing, port in use, the server died while
loading) is a :class:`icd.errors.UserError` with one line that ends with the tail of Triton's log. ``stop()``
sends SIGTERM to the ``tritonserver`` process itself (not a wrapper), waits, then SIGKILLs what is left of its
process group (the python backend stubs), so nothing is orphaned.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from types import TracebackType

import httpx

from icd.defaults import LOOPBACK, TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT
from icd.errors import UserError
from icd.serve.triton_env import prepare_backend_dir, server_environment, tritonserver_binary
from icd.io.ports import port_in_use

_LOG_TAIL_CHARS = 600
_PR_SET_PDEATHSIG = 1


class ModelControlMode(str, Enum):
    """Triton's ``--model-control-mode``."""

    NONE = "none"
    """Load every model of the repository at start; the repository API cannot load/unload."""
    EXPLICIT = "explicit"
    """Load ``load_models`` at start (``*`` = all); load/unload later through the repository API."""
    POLL = "poll"
    """Rescan the repository periodically and (re)load what changed."""




def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServer:
    """One local ``tritonserver`` process serving ``model_repository``.

    Args:
        model_repository: folder with one sub-folder per model (``config.pbtxt`` + version folders).
        http_port: HTTP/REST port (KServe v2 API).
        grpc_port: gRPC port.
        metrics_port: Prometheus ``/metrics`` port.
        log_file: where Triton's stdout+stderr go (default: ``triton.log`` in a private work folder).
        log_verbose: Triton's ``--log-verbose`` level (the ``TRITON_LOG_VERBOSE`` env var is used if 0).
        extra_args: more ``tritonserver`` flags, appended last.
        env: extra environment variables for the server and its python backend (e.g. ``TRITON_ICD_*``).
        model_control_mode: see :class:`ModelControlMode`.
        load_models: models loaded at start in explicit mode (``("*",)`` = all of the repository).
        exit_on_error: Triton's ``--exit-on-error``; False (default) keeps serving the models that loaded when
            another fails (a tampered model must not take the others down).
        die_with_parent: the server gets SIGTERM if the thread that started it dies (no orphans when a test
            runner is killed). Start it from a long-lived thread. False for a server that outlives its starter
            (``icd stack up``): stop it later with :func:`stop_tritonserver_pid`.
        workdir: folder for the backend directory (and the default log); default: a new temporary folder.
    """

    def __init__(
        self,
        model_repository: Path,
        http_port: int = TRITON_HTTP_PORT,
        grpc_port: int = TRITON_GRPC_PORT,
        metrics_port: int = TRITON_METRICS_PORT,
        log_file: Path | None = None,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        model_control_mode: ModelControlMode | str = ModelControlMode.NONE,
        load_models: Sequence[str] = ("*",),
        exit_on_error: bool = False,
        die_with_parent: bool = True,
        exit_timeout_s: int = 5,
        workdir: Path | None = None,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.http_port = int(http_port)
        self.grpc_port = int(grpc_port)
        self.metrics_port = int(metrics_port)
        self.log_verbose = int(log_verbose or os.environ.get("TRITON_LOG_VERBOSE", "0") or 0)
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.model_control_mode = ModelControlMode(model_control_mode)
        self.load_models = tuple(load_models)
        self.exit_on_error = exit_on_error
        self.die_with_parent = die_with_parent
        self.exit_timeout_s = int(exit_timeout_s)
        self._workdir: Path | None = Path(workdir) if workdir is not None else None
        self._log_file = Path(log_file) if log_file else None
        self._proc: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<http_port>``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<grpc_port>`` (the form tritonclient.grpc expects)."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:<metrics_port>/metrics``."""
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """PID of the ``tritonserver`` process (None when not started)."""
        return self._proc.pid if self._proc else None

    @property
    def log_file(self) -> Path | None:
        """Triton's log file (stdout + stderr, including the python backend's prints and ICD log lines)."""
        return self._log_file

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------------------------------------- lifecycle
    def command(self, backend_dir: Path) -> list[str]:
        """The ``tritonserver`` command line."""
        args = [
            str(tritonserver_binary()),
            f"--model-repository={self.model_repository.resolve()}",
            f"--backend-directory={backend_dir}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--metrics-config=summary_latencies=true",
            f"--exit-on-error={'true' if self.exit_on_error else 'false'}",
            "--strict-readiness=false",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            f"--model-control-mode={self.model_control_mode.value}",
        ]
        if self.model_control_mode == ModelControlMode.EXPLICIT:
            args += [f"--load-model={name}" for name in self.load_models]
        return args + list(self.extra_args)

    def _check_can_start(self) -> None:
        tritonserver_binary()
        if not self.model_repository.is_dir():
            raise UserError(f"model repository not found: {self.model_repository}")
        ports = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise UserError(f"Triton ports must differ: {ports}")
        for kind, port in ports.items():
            if port_in_use(port):
                raise UserError(f"{kind} port {port} is already in use on {LOOPBACK}; choose another with --{kind}-port")

    def start(self, timeout_s: float = 60.0) -> TritonServer:
        """Start the server and wait until ``/v2/health/ready`` answers 200.

        Raises:
            UserError: binary missing, repository missing, port in use, the server exited, or not ready in time.
        """
        if self.running:
            return self
        self._check_can_start()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="icd-triton-"))
        backend_dir = prepare_backend_dir(self._workdir / "backends")
        if self._log_file is None:
            self._log_file = self._workdir / "triton.log"
        self._log_file.parent.mkdir(parents=True, exist_ok=True)
        command = self.command(backend_dir)
        with open(self._log_file, "ab") as log:
            try:
                self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_environment(self.env, self.model_repository),
                    start_new_session=True,
                    preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
                )
            except OSError as exc:
                raise UserError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"{self.http_url}/v2/health/ready"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll() if self._proc else -1
                if code is not None:
                    self._cleanup_group()
                    raise UserError(f"tritonserver exited with code {code} while starting: {self.log_tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise UserError(f"tritonserver not ready on {url} after {timeout_s:.0f} s: {tail}")

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM the server, wait up to ``timeout_s`` (default: exit timeout + 10 s), then SIGKILL; reap its process group. Idempotent.

        Returns:
            The server's exit code (None if it was never started).
        """
        proc = self._proc
        if proc is None:
            return None
        if timeout_s is None:
            timeout_s = self.exit_timeout_s + 10.0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._cleanup_group()
        if self._workdir is not None:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        return proc.returncode

    def _cleanup_group(self) -> None:
        """SIGKILL whatever is left in the server's own process group (its python backend stubs)."""
        if self._proc is not None:
            kill_process_group(self._proc.pid)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------------------------------------- helpers
    def log_text(self) -> str:
        """Everything Triton wrote to its log so far."""
        if self._log_file is None or not self._log_file.is_file():
            return ""
        return self._log_file.read_text(errors="replace")

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the log on one line (for error messages)."""
        text = self.log_text().strip()
        return " | ".join(line.strip() for line in text[-chars:].splitlines() if line.strip()) or "(empty log)"

    def exit_description(self) -> str:
        """How the process ended (``exited with code 1``, ``was killed by SIGKILL``), for error messages."""
        code = None if self._proc is None else self._proc.poll()
        if code is None:
            return "is still running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def last_errors(self, count: int = 3) -> str:
        """Triton's last error lines (``E``/``F`` severity, ``Signal (N) received``), else its last lines; one line."""
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Signal (")
                  or (line[:1] in "EF" and line[1:5].isdigit() and line[5:6] == " ")]
        return " | ".join(line[:200] for line in (errors or lines)[-count:]) or "(empty log)"

    def model_ready(self, name: str, version: str = "") -> bool:
        """Whether ``name`` is loaded and ready."""
        suffix = f"/versions/{version}" if version else ""
        try:
            resp = httpx.get(f"{self.http_url}/v2/models/{name}{suffix}/ready", timeout=5.0, trust_env=False)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's repository index: ``[{"name", "version", "state", "reason"}, ...]``."""
        resp = httpx.post(f"{self.http_url}/v2/repository/index", json={}, timeout=10.0, trust_env=False)
        resp.raise_for_status()
        return resp.json()

    def load_model(self, name: str, timeout_s: float = 120.0) -> None:
        """Load (or reload) ``name`` through the repository API (explicit mode).

        Raises:
            UserError: Triton refused to load it (the message carries Triton's reason).
        """
        load_model_at(self.http_url, name, timeout_s)

    def unload_model(self, name: str, timeout_s: float = 60.0) -> None:
        """Unload ``name`` through the repository API (explicit mode)."""
        resp = httpx.post(f"{self.http_url}/v2/repository/models/{name}/unload", timeout=timeout_s, trust_env=False)
        if resp.status_code != 200:
            raise UserError(f"Triton could not unload model {name!r}: {_error_text(resp)}")


def load_model_at(http_url: str, name: str, timeout_s: float = 600.0) -> None:
    """Load (or reload) ``name`` on the Triton at ``http_url`` through the repository API; waits for it.

    Raises:
        UserError: Triton refused or is unreachable (the message carries Triton's answer).
    """
    try:
        resp = httpx.post(f"{http_url}/v2/repository/models/{name}/load", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        raise UserError(f"Triton at {http_url} did not answer the load of {name!r} ({exc})") from None
    if resp.status_code != 200:
        raise UserError(f"Triton could not load model {name!r}: {_error_text(resp)}")


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text))
    except ValueError:
        return resp.text


def kill_process_group(pgid: int, wait_s: float = 5.0) -> None:
    """SIGKILL the process group ``pgid`` (a server started in its own session: group id = its pid), wait for it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def stop_tritonserver_pid(pid: int, timeout_s: float = 15.0) -> bool:
    """Stop a ``tritonserver`` started by another process (``icd stack up``): SIGTERM, wait, SIGKILL, reap its
    process group (python backend stubs). Returns whether it was running (a reused PID is left alone)."""
    from icd.monitor.process import pid_alive, pid_runs

    if not pid_runs(pid, "tritonserver"):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    kill_process_group(pid)
    return True
