"""Closed-loop client traffic through the router, recorded per request from the client's side.

This is the client's view a rollout is judged by: every request's latency, HTTP status (0 = transport error,
i.e. a dropped request), the variant the router chose (``X-ICD-Variant``) and the router generation.

Example:
    records = run_traffic(TrafficSpec(url="http://127.0.0.1:8080/v2/models/bert/infer", body=payload,
                                      concurrency=4, duration_s=10))
    print(sum(r.failed for r in records))
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

VARIANT_HEADER = "X-ICD-Variant"
GENERATION_HEADER = "X-ICD-Generation"


@dataclass(frozen=True)
class RequestRecord:
    """One client request as the client saw it."""

    t: float
    """Wall-clock start (``time.time()``)."""
    latency_ms: float
    """Client-measured latency, send to last byte."""
    status: int
    """HTTP status; 0 when the request failed in transport (connection refused/reset)."""
    variant: str
    """The variant the router chose (response header), or "" when unknown."""
    generation: int
    """Router config generation that answered (-1 when unknown)."""
    error: str = ""
    """Transport error text, if any."""
    body: Any = None
    """Parsed JSON response (only when kept)."""

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 429

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class TrafficSpec:
    """What to send and how hard."""

    url: str
    body: dict[str, Any] | Callable[[int], dict[str, Any]]
    concurrency: int = 4
    duration_s: float = 10.0
    headers: dict[str, str] | Callable[[int], dict[str, str]] = field(default_factory=dict)
    timeout_s: float = 30.0
    keep_bodies: bool = False
    max_requests: int | None = None


async def _worker(client: httpx.AsyncClient, spec: TrafficSpec, deadline: float, counter: list[int],
                  out: list[RequestRecord], stop: threading.Event) -> None:
    while time.monotonic() < deadline and not stop.is_set():
        i = counter[0]
        if spec.max_requests is not None and i >= spec.max_requests:
            return
        counter[0] += 1
        body = spec.body(i) if callable(spec.body) else spec.body
        headers = spec.headers(i) if callable(spec.headers) else spec.headers
        t0, wall = time.perf_counter(), time.time()
        try:
            resp = await client.post(spec.url, json=body, headers=headers)
            latency = (time.perf_counter() - t0) * 1e3
            gen = resp.headers.get(GENERATION_HEADER, "-1")
            parsed = resp.json() if spec.keep_bodies and resp.status_code == 200 else None
            out.append(RequestRecord(wall, latency, resp.status_code, resp.headers.get(VARIANT_HEADER, ""),
                                     int(gen) if gen.lstrip("-").isdigit() else -1, "", parsed))
        except httpx.HTTPError as exc:
            latency = (time.perf_counter() - t0) * 1e3
            out.append(RequestRecord(wall, latency, 0, "", -1, f"{type(exc).__name__}: {exc}"))


async def run_traffic_async(spec: TrafficSpec, stop: threading.Event | None = None) -> list[RequestRecord]:
    """Run ``spec.concurrency`` closed-loop workers for ``spec.duration_s`` seconds (or until ``stop``)."""
    out: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    async with httpx.AsyncClient(timeout=spec.timeout_s, limits=limits) as client:
        deadline = time.monotonic() + spec.duration_s
        counter = [0]
        await asyncio.gather(*(_worker(client, spec, deadline, counter, out, stop or threading.Event())
                               for _ in range(spec.concurrency)))
    return out


def run_traffic(spec: TrafficSpec, stop: threading.Event | None = None) -> list[RequestRecord]:
    """Blocking wrapper of :func:`run_traffic_async`."""
    return asyncio.run(run_traffic_async(spec, stop))


class BackgroundTraffic:
    """Run traffic in a thread while the caller changes the router; ``stop()`` returns the records."""

    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self._stop = threading.Event()
        self._records: list[RequestRecord] = []
        self._thread = threading.Thread(target=self._run, name="icd-traffic", daemon=True)

    def _run(self) -> None:
        self._records = run_traffic(self.spec, self._stop)

    def start(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def stop(self) -> list[RequestRecord]:
        self._stop.set()
        self._thread.join()
        return self._records

    def __enter__(self) -> BackgroundTraffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
