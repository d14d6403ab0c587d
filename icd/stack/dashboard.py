"""Grafana's port on the embedded stack (``python -m icd.stack.dashboard --port 3000 --target URL``).

Grafana cannot run on this host, so its port answers like this instead: ``/api/health`` → 200 (Grafana's health
endpoint, for checks), every other path → ``302`` to the icd console dashboard that Prometheus serves
(``/consoles/icd_overview.html``: request rate, latency percentiles, queue, errors, ICD metrics). The guide's
``open http://localhost:3000`` therefore opens the same panels as the compose stack's Grafana dashboard.
"""

from __future__ import annotations

import argparse
import json
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from icd.defaults import LOOPBACK


def handler_for(target: str) -> type[BaseHTTPRequestHandler]:
    """A request handler redirecting to ``target`` (health answered locally)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/api/health":
                body = json.dumps({"database": "ok", "version": "icd-console", "dashboard": target}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"{self.address_string()} {fmt % args}", flush=True)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="URL of the console dashboard")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((LOOPBACK, args.port), handler_for(args.target))

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"icd dashboard on http://{LOOPBACK}:{args.port}/ -> {args.target}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
