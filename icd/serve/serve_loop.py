"""``icd serve``: start the embedded server, say what it serves, run until Ctrl-C / SIGTERM, stop cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from icd.errors import ServiceFailed, UserError
from icd.serve.model_states import ModelState, model_states
from icd.serve.triton_local import TritonServer


def describe(server: TritonServer) -> list[str]:
    """Lines saying where the server listens and the state of every model (with Triton's reason if not ready)."""
    lines = [
        f"Triton (pid {server.pid}) serving {server.model_repository}",
        f"  HTTP    {server.http_url}",
        f"  gRPC    {server.grpc_url}",
        f"  metrics {server.metrics_url}",
        f"  log     {server.log_file}",
    ]
    return lines + [f"  {state.line()}" for state in server_model_states(server)]


def server_model_states(server: TritonServer) -> list[ModelState]:
    """Every model of the server's repository and index, with Triton's reason when not READY."""
    return model_states(server.http_url, server.model_repository, server.log_text())


def readiness_line(states: list[ModelState]) -> str:
    """``ready`` only when every model is READY; otherwise say which are not.

    Raises:
        UserError: the repository has models and none of them is READY (each model's reason in the message).
    """
    not_ready = [s for s in states if not s.ready]
    if not not_ready:
        return "ready; Ctrl-C or SIGTERM stops it"
    if len(not_ready) == len(states):
        reasons = "; ".join(f"{s.name}: {s.state} ({s.reason or 'no reason given'})" for s in not_ready)
        raise UserError(f"no model is READY — {reasons}")
    names = ", ".join(s.name for s in not_ready)
    return (f"partly ready: {len(states) - len(not_ready)} of {len(states)} models READY, not ready: {names} "
            "(reasons above); Ctrl-C or SIGTERM stops it")


def serve_until_signal(server: TritonServer, say: Callable[[str], None], poll_s: float = 1.0,
                       ready_line: str = "") -> int:
    """Block until SIGINT/SIGTERM (or the server dies), then stop the server; returns its exit code.

    ``ready_line`` is said once the signal handlers are in place, so a client that acts on it can stop us cleanly.

    Raises:
        ServiceFailed: the server exited on its own (how, its log file and its last error lines; exit code 1).
    """
    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    if ready_line:
        say(ready_line)
    try:
        while not stop.wait(poll_s):
            if not server.running:
                how, errors = server.exit_description(), server.last_errors()
                server.stop()
                raise ServiceFailed(f"tritonserver (pid {server.pid}) {how} while serving; its log: {server.log_file}; "
                                f"last lines: {errors}")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    say(f"received {signal.Signals(received[0]).name}, stopping Triton (pid {server.pid})")
    code = server.stop()
    say(f"Triton stopped (exit code {code})")
    return 0
