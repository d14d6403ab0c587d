"""Router lifecycle helpers shared by the CLI commands: parse flags, find or start a router, its exporter.

Example:
    router = ensure_router(state_dir / "router", RouterSpec(...))   # reuse a running one, else start detached
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from icd.errors import UserError
from icd.rollout.router_config import RouterSpec
from icd.rollout.router_nginx import NginxRouter, pid_runs

EXPORTER_PID = "exporter.pid"
ROUTER_SUBDIR = "router"


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["bert_baseline=90", "bert_icd=10"]`` (or one comma-separated item) → ``{name: weight}``."""
    out: dict[str, float] = {}
    for item in (x for raw in items for x in raw.split(",") if x):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 100.0
        except ValueError:
            raise UserError(f"--variant {item!r}: expected NAME=WEIGHT, e.g. bert_icd=10") from None
    if not out:
        raise UserError("--variant: give at least one NAME=WEIGHT")
    return out


def parse_upstreams(items: list[str]) -> dict[str, list[str]]:
    """``["blue=127.0.0.1:8000", "green=127.0.0.1:8100"]`` → ``{colour: [addr, ...]}`` (``+`` joins addrs)."""
    out: dict[str, list[str]] = {}
    for item in items:
        colour, sep, addrs = item.partition("=")
        if not sep or not addrs:
            raise UserError(f"--upstream {item!r}: expected COLOUR=HOST:PORT, e.g. blue=127.0.0.1:8000")
        out[colour.strip()] = [a.strip().removeprefix("http://") for a in addrs.split("+")]
    return out


def endpoint_addr(endpoint: str) -> str:
    """``http://localhost:8000`` → ``localhost:8000``."""
    addr = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
    if ":" not in addr:
        raise UserError(f"--endpoint {endpoint!r}: expected http://HOST:PORT")
    return addr


def check_spec(spec: RouterSpec) -> RouterSpec:
    try:
        spec.validate()
    except ValueError as exc:
        raise UserError(f"router: {exc}") from exc
    return spec


def ensure_router(workdir: Path, spec: RouterSpec) -> tuple[NginxRouter, bool]:
    """The router running in ``workdir``, or a new detached one from ``spec``; returns (router, started)."""
    router = NginxRouter(workdir)
    if router.master_pid() is not None:
        return router, False
    router.start(check_spec(spec), detach=True)
    return router, True


@contextlib.contextmanager
def ephemeral_router(spec: RouterSpec) -> Iterator[NginxRouter]:
    """A router in a temporary folder for the duration of a command; stopped (and waited for) afterwards."""
    with tempfile.TemporaryDirectory(prefix="icd-router-") as tmp:
        router = NginxRouter(Path(tmp))
        router.start(check_spec(spec))
        try:
            yield router
        finally:
            router.stop()


def start_exporter(router: NginxRouter, port: int) -> int:
    """Start the router's Prometheus exporter as a detached process; returns its pid (recorded in the router dir)."""
    log = open(router.workdir / "logs" / "exporter.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "icd.rollout.router_exporter", "--log", str(router.access_log),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    (router.workdir / EXPORTER_PID).write_text(str(proc.pid))
    return proc.pid


def stop_exporter(router: NginxRouter, timeout_s: float = 10.0) -> bool:
    """Stop the exporter recorded in the router dir (SIGTERM, wait, SIGKILL); True when one was running."""
    pid_file = router.workdir / EXPORTER_PID
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if not pid_runs(pid, "router_exporter"):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
