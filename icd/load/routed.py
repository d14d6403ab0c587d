"""Recorded traffic through the router: every request's latency, status and the variant nginx chose.

This is the client's view a rollout is judged by (A/B, canary load test, blue-green watch): each request is kept
as a :class:`RoutedRecord` with its intended and actual send time, its client-measured latency, the HTTP status
(0 = transport error, i.e. a dropped request), the variant the router chose (``X-ICD-Variant``), the router
generation (``X-ICD-Generation``) and the router's request id (``X-ICD-Request-Id``).

Two loops, as :mod:`icd.load.engine`:

* closed (``rate=None``): ``concurrency`` workers, each sending the next request when the last one returned;
* open (``rate`` req/s): send times laid out in advance (constant or Poisson gaps) whatever the server does, at
  most ``concurrency`` requests in flight; a send made later than its intended time records the lag
  (``lag_ms``), so a generator that fell behind is visible in the evidence instead of silently thinning traffic.

Example:
    records = run_routed(RoutedSpec(url="http://127.0.0.1:8080/v2/models/bert/infer", body=payload,
                                     rate=50, concurrency=16, duration_s=10))
    print(sum(r.failed for r in records))
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from icd.load.settings import Arrival

VARIANT_HEADER = "X-ICD-Variant"
GENERATION_HEADER = "X-ICD-Generation"
REQUEST_ID_HEADER = "X-ICD-Request-Id"


@dataclass(frozen=True)
class RoutedRecord:
    """One client request as the client saw it."""

    t: float
    """Wall-clock time of the actual send (``time.time()``)."""
    latency_ms: float
    """Client-measured latency, send to last byte."""
    status: int
    """HTTP status; 0 when the request failed in transport (connection refused/reset, timeout)."""
    variant: str
    """The variant the router chose (response header), or "" when unknown."""
    generation: int
    """Router config generation that answered (-1 when unknown)."""
    error: str = ""
    """Transport error text, if any."""
    body: Any = None
    """Parsed JSON response (only when kept)."""
    lag_ms: float = 0.0
    """Open loop: how late the send was against its intended time (0 in a closed loop)."""
    request_id: str = ""
    """The router's ``$request_id`` for this request ("" when the answer did not carry it)."""

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 429

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class RoutedSpec:
    """What to send and how hard."""

    url: str
    body: dict[str, Any] | Callable[[int], dict[str, Any]]
    concurrency: int = 4
    """Closed loop: workers. Open loop: the most requests in flight."""
    duration_s: float = 10.0
    headers: dict[str, str] | Callable[[int], dict[str, str]] = field(default_factory=dict)
    timeout_s: float = 30.0
    keep_bodies: bool = False
    max_requests: int | None = None
    rate: float | None = None
    """Open-loop request rate (req/s); ``None`` = closed loop."""
    arrival: Arrival = Arrival.POISSON
    """Open loop: gaps between intended sends."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0 req/s, got {self.rate}")
        if self.duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")


async def _send(client: httpx.AsyncClient, spec: RoutedSpec, i: int, lag_ms: float) -> RoutedRecord:
    body = spec.body(i) if callable(spec.body) else spec.body
    headers = spec.headers(i) if callable(spec.headers) else spec.headers
    t0, wall = time.perf_counter(), time.time()
    try:
        resp = await client.post(spec.url, json=body, headers=headers)
        latency = (time.perf_counter() - t0) * 1e3
        parsed = resp.json() if spec.keep_bodies and resp.status_code == 200 else None
        gen = resp.headers.get(GENERATION_HEADER, "-1")
        return RoutedRecord(wall, latency, resp.status_code, resp.headers.get(VARIANT_HEADER, ""),
                            int(gen) if gen.lstrip("-").isdigit() else -1, "", parsed, lag_ms,
                            resp.headers.get(REQUEST_ID_HEADER, ""))
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - t0) * 1e3
        return RoutedRecord(wall, latency, 0, "", -1, f"{type(exc).__name__}: {exc}", None, lag_ms)


async def _closed(client: httpx.AsyncClient, spec: RoutedSpec, stop: threading.Event) -> list[RoutedRecord]:
    out: list[RoutedRecord] = []
    deadline = time.monotonic() + spec.duration_s
    counter = [0]

    async def worker() -> None:
        while time.monotonic() < deadline and not stop.is_set():
            i = counter[0]
            if spec.max_requests is not None and i >= spec.max_requests:
                return
            counter[0] += 1
            out.append(await _send(client, spec, i, 0.0))

    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    return out


async def _open(client: httpx.AsyncClient, spec: RoutedSpec, stop: threading.Event) -> list[RoutedRecord]:
    assert spec.rate is not None
    out: list[RoutedRecord] = []
    rng = random.Random(spec.seed)
    slots = asyncio.Semaphore(spec.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    intended = start

    async def one(i: int, planned: float) -> None:
        try:
            lag_ms = max(0.0, (time.monotonic() - planned) * 1e3)
            out.append(await _send(client, spec, i, lag_ms))
        finally:
            slots.release()

    i = 0
    while not stop.is_set() and intended < start + spec.duration_s:
        if spec.max_requests is not None and i >= spec.max_requests:
            break
        wait = intended - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await slots.acquire()  # at most `concurrency` in flight: a late send records its lag
        task = asyncio.create_task(one(i, intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        gap = 1.0 / spec.rate
        intended += rng.expovariate(spec.rate) if spec.arrival == Arrival.POISSON else gap
    if tasks:
        await asyncio.gather(*tasks)
    return out


async def run_routed_async(spec: RoutedSpec, stop: threading.Event | None = None) -> list[RoutedRecord]:
    """Run the load ``spec`` describes for ``spec.duration_s`` seconds (or until ``stop``); records in send order."""
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)
    async with httpx.AsyncClient(timeout=spec.timeout_s, limits=limits, trust_env=False) as client:
        run = _closed if spec.rate is None else _open
        records = await run(client, spec, stop or threading.Event())
    return sorted(records, key=lambda r: r.t)


def run_routed(spec: RoutedSpec, stop: threading.Event | None = None) -> list[RoutedRecord]:
    """Blocking wrapper of :func:`run_routed_async`."""
    return asyncio.run(run_routed_async(spec, stop))


class BackgroundRouted:
    """Run routed traffic in a thread while the caller changes the router; ``stop()`` returns the records."""

    def __init__(self, spec: RoutedSpec) -> None:
        self.spec = spec
        self._stop = threading.Event()
        self._records: list[RoutedRecord] = []
        self._thread = threading.Thread(target=self._run, name="icd-routed-traffic", daemon=True)

    def _run(self) -> None:
        self._records = run_routed(self.spec, self._stop)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> BackgroundRouted:
        self._thread.start()
        return self

    def stop(self) -> list[RoutedRecord]:
        self._stop.set()
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        return self._records

    def __enter__(self) -> BackgroundRouted:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
