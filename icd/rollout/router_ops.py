"""Router lifecycle helpers shared by the CLI commands: parse flags, find or start a router, its side processes.

Two side processes live next to a router, in its folder, started detached and stopped by PID:

* the metrics exporter (:mod:`icd.rollout.router_exporter`, ``exporter.pid``): ``icd_router_*`` series;
* the shadow comparator (:mod:`icd.rollout.shadow`, ``comparator.pid`` / ``comparator.port``): judges mirrored
  requests, ``icd_shadow_*`` series on the same port's ``/metrics``.

Example:
    router, started = ensure_router(state_dir / "router", RouterSpec(...))   # reuse a running one, else start
    addr = ensure_comparator(router)                                          # for mirroring
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from icd.defaults import DEFAULT_PUBLIC_MODEL, LOOPBACK, ROUTER_PORT, TRITON_HTTP_PORT
from icd.errors import UserError
from icd.io.ports import free_port, port_in_use
from icd.monitor.process import pid_alive
from icd.rollout.nginx_process import NginxError, pid_runs
from icd.rollout.router_config import MatchRule, RouterSpec
from icd.rollout.router_nginx import NginxRouter, Routes
from icd.rollout.shadow import SHADOW_LOG

EXPORTER_PID = "exporter.pid"
COMPARATOR_PID = "comparator.pid"
COMPARATOR_PORT = "comparator.port"
ROUTER_SUBDIR = "router"
SIDECAR_READY_S = 20.0


def parse_weights(items: list[str]) -> dict[str, float]:
    """``["bert_baseline=90", "bert_icd=10"]`` (or one comma-separated item) → ``{name: weight}``."""
    out: dict[str, float] = {}
    for item in (x for raw in items for x in raw.split(",") if x):
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep else 100.0
        except ValueError:
            raise UserError(f"--variant {item!r}: expected NAME=WEIGHT, e.g. bert_icd=10") from None
        if not name.strip() or not (math.isfinite(weight) and weight >= 0):
            raise UserError(f"--variant {item!r}: expected a model name and a weight >= 0, e.g. bert_icd=10")
        out[name.strip()] = weight
    if not out:
        raise UserError("--variant: give at least one NAME=WEIGHT")
    if not any(weight > 0 for weight in out.values()):
        raise UserError(f"--variant {','.join(items)}: every weight is 0; give one variant some traffic")
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


def check_match_rules(rules: Sequence[MatchRule], primary: str) -> None:
    """Raise :class:`UserError` when nginx refuses the router config that holds ``rules``.

    nginx reads a regex with PCRE, which refuses some that Python's ``re`` reads (``(?a)``, ``(?L)``): ``nginx -t``
    on a scratch config finds them before a router starts or changes, not at the A/B step.
    """
    if not rules:
        return
    weights = {primary: 100.0, **{rule.variant: 0.0 for rule in rules if rule.variant != primary}}
    spec = check_spec(RouterSpec(ROUTER_PORT, DEFAULT_PUBLIC_MODEL, weights,
                                 {"blue": [f"{LOOPBACK}:{TRITON_HTTP_PORT}"]}, "blue", match=list(rules)))
    with tempfile.TemporaryDirectory(prefix="icd-router-check-") as tmp:
        try:
            NginxRouter(Path(tmp)).check(spec)
        except NginxError as exc:
            flags = ", ".join(f"{'cookie' if r.cookie else 'header'} {r.cookie or r.header}={'~' if r.regex else ''}"
                              f"{r.value}" for r in rules)
            raise UserError(f"match rules ({flags}): nginx refuses them: {_nginx_reason(str(exc))}") from None


def _nginx_reason(message: str) -> str:
    """nginx's ``[emerg]`` reason without the scratch file's path (the whole message when there is none)."""
    for line in message.splitlines():
        _, tag, reason = line.partition("[emerg] ")
        if tag:
            return re.sub(r" in \S+:\d+$", "", reason.strip())
    return " ".join(message.split())


@contextlib.contextmanager
def ephemeral_router(spec: RouterSpec) -> Iterator[NginxRouter]:
    """A router in a temporary folder for the duration of a command; stopped (and waited for) afterwards."""
    with tempfile.TemporaryDirectory(prefix="icd-router-") as tmp:
        router = NginxRouter(Path(tmp))
        router.start(check_spec(spec))
        try:
            yield router
        finally:
            stop_comparator(router)
            router.stop()


# --- side processes -----------------------------------------------------------------------------------------------
def _start_sidecar(router: NginxRouter, module: str, args: list[str], pid_name: str, log_name: str) -> int:
    (router.workdir / "logs").mkdir(parents=True, exist_ok=True)
    log = open(router.workdir / "logs" / log_name, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log,  # noqa: S603
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (router.workdir / pid_name).write_text(str(proc.pid))
    return proc.pid


def _stop_sidecar(router: NginxRouter, pid_name: str, needle: str, timeout_s: float = 10.0) -> bool:
    pid_file = router.workdir / pid_name
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    if not pid_runs(pid, needle):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def start_exporter(router: NginxRouter, port: int) -> int:
    """Start the router's Prometheus exporter as a detached process; returns its pid (recorded in the router dir)."""
    if port_in_use(port):
        raise UserError(f"--exporter-port {port}: port in use (choose another, or 0 for none)")
    return _start_sidecar(router, "icd.rollout.router_exporter", ["--log", str(router.access_log), "--port", str(port)],
                          EXPORTER_PID, "exporter.out")


def stop_exporter(router: NginxRouter, timeout_s: float = 10.0) -> bool:
    """Stop the exporter recorded in the router dir (SIGTERM, wait, SIGKILL); True when one was running."""
    return _stop_sidecar(router, EXPORTER_PID, "router_exporter", timeout_s)


def comparator_addr(router: NginxRouter) -> str | None:
    """``host:port`` of the router's running shadow comparator, or ``None``."""
    try:
        pid = int((router.workdir / COMPARATOR_PID).read_text())
        port = int((router.workdir / COMPARATOR_PORT).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return f"{LOOPBACK}:{port}" if pid_runs(pid, "icd.rollout.shadow") else None


def ensure_comparator(router: NginxRouter, port: int = 0) -> str:
    """The router's shadow comparator (started detached if none runs); returns its ``host:port``."""
    running = comparator_addr(router)
    if running is not None:
        return running
    port = port or free_port()
    if port_in_use(port):
        raise UserError(f"--comparator-port {port}: port in use")
    _start_sidecar(router, "icd.rollout.shadow", ["--port", str(port), "--log", str(router.workdir / SHADOW_LOG)],
                   COMPARATOR_PID, "comparator.out")
    (router.workdir / COMPARATOR_PORT).write_text(str(port))
    deadline = time.monotonic() + SIDECAR_READY_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                return f"{LOOPBACK}:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_comparator(router)
    raise UserError(f"shadow comparator did not start on port {port} (see {router.workdir / 'logs/comparator.out'})")


def stop_comparator(router: NginxRouter, timeout_s: float = 10.0) -> bool:
    """Stop the router's shadow comparator; True when one was running."""
    (router.workdir / COMPARATOR_PORT).unlink(missing_ok=True)
    return _stop_sidecar(router, COMPARATOR_PID, "icd.rollout.shadow", timeout_s)


class ManagedRouter:
    """The rollout loop's router (:class:`icd.rollout.scheduler.TrafficRouter`): an nginx router that starts its
    shadow comparator when a route asks for mirroring."""

    def __init__(self, router: NginxRouter) -> None:
        self.router = router

    @property
    def url(self) -> str:
        return self.router.url

    @property
    def spec(self) -> RouterSpec:
        return self.router.spec

    def set_routes(self, routes: Routes) -> RouterSpec:
        comparator = ensure_comparator(self.router) if routes.mirror is not None else None
        return self.router.set_routes(routes, comparator)
