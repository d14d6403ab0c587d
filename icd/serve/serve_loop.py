"""``icd serve``: start the embedded server, say what it serves, run until Ctrl-C / SIGTERM, stop cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from icd.errors import UserError
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
    for row in server.repository_index():
        state = row.get("state", "?")
        reason = f"  ({row['reason'].splitlines()[0]})" if row.get("reason") and state != "READY" else ""
        lines.append(f"  model {row['name']} v{row.get('version', '?')}: {state}{reason}")
    return lines


def serve_until_signal(server: TritonServer, say: Callable[[str], None], poll_s: float = 1.0) -> int:
    """Block until SIGINT/SIGTERM (or the server dies), then stop the server; returns its exit code.

    Raises:
        UserError: the server exited on its own (the message has its log tail).
    """
    stop = threading.Event()
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(poll_s):
            if not server.running:
                tail = server.log_tail()
                server.stop()
                raise UserError(f"tritonserver exited unexpectedly: {tail}")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    say(f"received {signal.Signals(received[0]).name}, stopping Triton (pid {server.pid})")
    code = server.stop()
    say(f"Triton stopped (exit code {code})")
    return 0
