"""Prometheus metrics of the router, derived from its access log (nginx has no native histogram).

Exposes, per variant: ``icd_router_requests_total{variant,code,colour}`` and
``icd_router_request_duration_seconds{variant,colour}`` (a histogram of nginx's ``$request_time``), which the
rollout analysis' PromQL templates query (by variant; blue-green by colour). Run it next to the router:
``python -m icd.rollout.router_exporter --log L --port P``.

Example:
    with RouterExporter(Path("runs/router/access.jsonl"), port=9180):
        ...
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from icd.defaults import LOOPBACK
from icd.rollout.router_log import AccessLogReader

BUCKETS_S = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
             0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
POLL_S = 0.25


class RouterExporter:
    """Tails the access log in a thread and serves ``/metrics`` on ``port``."""

    def __init__(self, access_log: str | Path, port: int, addr: str = LOOPBACK, start_at_end: bool = True) -> None:
        self.reader = AccessLogReader(access_log, keep_s=1.0)
        if start_at_end:
            self.reader.poll()  # count only what happens from now on
        self.port = port
        self.addr = addr
        self.registry = CollectorRegistry()
        self.requests = Counter("icd_router_requests", "Requests proxied by the icd router.",
                                ["variant", "code", "colour"], registry=self.registry)
        self.duration = Histogram("icd_router_request_duration_seconds", "Router request time (nginx).",
                                  ["variant", "colour"], buckets=BUCKETS_S, registry=self.registry)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="icd-router-exporter", daemon=True)
        self._server = None

    def poll_once(self) -> int:
        """Fold new log lines into the metrics; returns how many."""
        new = self.reader.poll()
        for r in new:
            self.requests.labels(r.variant, str(r.status), r.colour).inc()
            self.duration.labels(r.variant, r.colour).observe(r.request_time_s)
        return len(new)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll_once()

    def start(self) -> RouterExporter:
        self._server, _ = start_http_server(self.port, addr=self.addr, registry=self.registry)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RouterExporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="router access log (access.jsonl)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    exporter = RouterExporter(args.log, args.port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    exporter.stop()


if __name__ == "__main__":
    main()
