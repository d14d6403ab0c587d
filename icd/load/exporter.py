"""``--metrics-port``: the generator's own client-side view, served for Prometheus (prometheus-client).

Series (label ``model``): ``icd_load_requests_total{outcome="ok"|"error"}``, ``icd_load_sent_total``,
``icd_load_late_sends_total``, ``icd_load_rate_rps{kind="sent"|"ok"|"error"|"target"}`` (last interval) and
``icd_load_latency_ms{quantile="0.5"|"0.95"|"0.99"}`` (last interval, from the HDR histogram).
"""

from __future__ import annotations

from icd.load.aggregate import IntervalRow
from icd.errors import UserError


class MetricsExporter:
    """Serves the generator's metrics on ``127.0.0.1:port`` (own registry) until :meth:`close`."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.requests = Counter("icd_load_requests", "Finished requests", ["model", "outcome"], registry=self.registry)
        self.sent = Counter("icd_load_sent", "Requests sent", ["model"], registry=self.registry)
        self.late = Counter("icd_load_late_sends", "Open-loop sends later than late_ms", ["model"], registry=self.registry)
        self.rate = Gauge("icd_load_rate_rps", "Rate over the last interval", ["model", "kind"], registry=self.registry)
        self.latency = Gauge("icd_load_latency_ms", "Client-side latency over the last interval", ["model", "quantile"],
                             registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise UserError(f"--metrics-port {port}: cannot listen ({exc.strerror})") from None
        self.port = port

    def update(self, row: IntervalRow) -> None:
        m = row.model
        self.requests.labels(m, "ok").inc(row.ok)
        self.requests.labels(m, "error").inc(row.errors)
        self.sent.labels(m).inc(row.sent)
        self.late.labels(m).inc(row.late)
        self.rate.labels(m, "sent").set(row.sent_rps)
        self.rate.labels(m, "ok").set(row.ok_rps)
        self.rate.labels(m, "error").set(row.error_rps)
        if row.target_rate is not None:
            self.rate.labels(m, "target").set(row.target_rate)
        for q, value in (("0.5", row.p50_ms), ("0.95", row.p95_ms), ("0.99", row.p99_ms)):
            if value is not None:
                self.latency.labels(m, q).set(value)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
