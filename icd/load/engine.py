"""The generator's inner loop, run inside one worker (a process, or the caller's process when ``workers=0``).

Closed loop: ``concurrency`` clients per model, each sending the next request when the last returns; latency is
measured from the actual send. Open loop: a scheduler lays out intended send times (constant or Poisson gaps at
the current target rate) whatever the server does; a request is handed to an idle connection, a new one (up to
``max_connections``) or else waits in a backlog. Latency is measured from the *intended* time, so time spent
queued behind a slow server is counted (no coordinated omission), and a send made more than ``late_ms`` after its
intended time is counted late.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from icd.load.clients import GrpcClient, HttpConnection, RequestError, grpc_payload
from icd.load.control import Control
from icd.load.histogram import LatencyHistogram
from icd.load.problems import CONNECTION_ERROR_KINDS
from icd.load.settings import Arrival, LoadMode, Protocol
from icd.load.stats import (
    Counters,
    FinalMessage,
    IntervalMessage,
    ModelFinal,
    ModelInterval,
    RequestRecord,
)

INTERVAL_S = 1.0
_IDLE_RATE_POLL_S = 0.02
_MAX_SLEEP_S = 0.05
_START_POLL_S = 0.002
RECONNECT_BACKOFF_S = (0.05, 1.0)
"""Closed loop: after a request that could not reach the server, a client waits this long (doubling from the
first value up to the second, reset by an answer) instead of hammering a dead port thousands of times a second."""

clock = time.monotonic


@dataclass
class ModelPlan:
    """One model's share of the load in one worker."""

    name: str
    index: int
    protocol: Protocol
    host: str
    port: int
    grpc_address: str
    payloads: list[Any]  # HTTP: full request bytes; gRPC: {input name: ndarray}
    concurrency: int


@dataclass
class WorkerPlan:
    """Everything a worker needs (picklable)."""

    worker: int
    n_workers: int
    models: list[ModelPlan]
    mode: LoadMode
    arrival: Arrival
    warmup_s: float
    duration_s: float
    timeout_s: float
    late_s: float
    max_connections: int
    seed: int
    interval_s: float = INTERVAL_S


class _ModelRun:
    """Per-model state inside a worker."""

    def __init__(self, plan: ModelPlan, timeout_s: float) -> None:
        self.plan = plan
        self.interval = Counters()
        self.interval_hist = LatencyHistogram()
        self.measured = Counters()
        self.measured_hist = LatencyHistogram()
        self.warmup = Counters()
        self.unsent_at_end = 0
        self.backlog: deque[float] = deque()
        self.idle: list[asyncio.Future[float | None]] = []
        self.consumers = 0
        self.closing = False
        self.tasks: set[asyncio.Task[None]] = set()
        self._grpc: GrpcClient | None = None
        self._timeout_s = timeout_s
        if plan.protocol == Protocol.GRPC:
            plan.payloads = [grpc_payload(p) for p in plan.payloads]
        self._payloads = itertools.cycle(plan.payloads)

    def client(self) -> HttpConnection | GrpcClient:
        if self.plan.protocol == Protocol.HTTP:
            return HttpConnection(self.plan.host, self.plan.port)
        if self._grpc is None:
            self._grpc = GrpcClient(self.plan.grpc_address, self.plan.name, self._timeout_s)
        return self._grpc

    def next_payload(self) -> Any:
        return next(self._payloads)

    async def close(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()


class Engine:
    """Runs one worker's load; emits an :class:`IntervalMessage` every interval and one :class:`FinalMessage`."""

    def __init__(
        self,
        plan: WorkerPlan,
        control: Control,
        emit: Callable[[object], None],
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.plan = plan
        self.control = control
        self.emit = emit
        self.on_request = on_request
        self.models = [_ModelRun(m, plan.timeout_s) for m in plan.models]
        self.rng = random.Random(plan.seed * 7919 + plan.worker)
        self.t0 = self.t_measure = self.t_end = 0.0
        self._interval_index = 0
        self._loads: list[asyncio.Task[None]] = []

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        while self.control.start_at() <= 0.0 and not self.control.stopped():
            await asyncio.sleep(_START_POLL_S)
        self.t0 = self.control.start_at()
        self.t_measure = self.t0 + self.plan.warmup_s
        self.t_end = self.t_measure + self.plan.duration_s
        delay = self.t0 - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        ticker = asyncio.create_task(self._intervals())
        watcher = asyncio.create_task(self._watch_stop())
        if self.plan.mode == LoadMode.CLOSED:
            coros = [self._closed_client(m) for m in self.models for _ in range(m.plan.concurrency)]
        else:
            coros = [self._open_scheduler(m) for m in self.models]
        self._loads = [asyncio.create_task(c) for c in coros]
        try:
            await asyncio.gather(*self._loads)
            await self._drain()
        except asyncio.CancelledError:
            pass
        finally:
            ticker.cancel()
            watcher.cancel()
            for m in self.models:
                for task in list(m.tasks):
                    task.cancel()
                await m.close()
        self._flush_interval()
        self.emit(self._final())

    async def _watch_stop(self) -> None:
        while not self.control.stopped():
            await asyncio.sleep(_MAX_SLEEP_S)
        for task in [*self._loads, *(t for m in self.models for t in m.tasks)]:
            task.cancel()

    async def _drain(self) -> None:
        """Wait for in-flight open-loop requests (bounded by the request timeout)."""
        for m in self.models:
            m.closing = True
            for fut in m.idle:
                if not fut.done():
                    fut.set_result(None)
            m.idle.clear()
        pending = [t for m in self.models for t in m.tasks]
        if pending:
            await asyncio.wait(pending, timeout=self.plan.timeout_s + 1.0)

    # ---- intervals -------------------------------------------------------------------------------------------
    async def _intervals(self) -> None:
        while True:
            target = self.t0 + (self._interval_index + 1) * self.plan.interval_s
            await asyncio.sleep(max(0.0, target - clock()))
            self._flush_interval()

    def _flush_interval(self) -> None:
        models = {}
        for m in self.models:
            rate = self.control.rate(m.plan.index) if self.plan.mode == LoadMode.OPEN else None
            models[m.plan.name] = ModelInterval(m.interval, m.interval_hist.encode(), rate)
            m.interval = Counters()
            m.interval_hist.reset()
        start = self.t0 + self._interval_index * self.plan.interval_s
        span = min(clock(), start + self.plan.interval_s) - start
        self.emit(IntervalMessage(self.plan.worker, self._interval_index, max(span, 0.0), models))
        self._interval_index += 1

    def _final(self) -> FinalMessage:
        models = {}
        for m in self.models:
            total = m.measured.sent + m.warmup.sent
            done = m.measured.ok + m.measured.error_total + m.warmup.ok + m.warmup.error_total
            models[m.plan.name] = ModelFinal(
                m.measured, m.measured_hist.encode(), m.warmup, m.unsent_at_end + len(m.backlog), max(0, total - done)
            )
        return FinalMessage(self.plan.worker, models, self.t_measure, min(clock(), self.t_end))

    # ---- one request -----------------------------------------------------------------------------------------
    async def _request(self, m: _ModelRun, client: HttpConnection | GrpcClient, intended: float) -> str | None:
        """Send one request and count it; returns the error kind (None when it was answered)."""
        sent = clock()
        warm = intended < self.t_measure
        span = m.warmup if warm else m.measured
        span.sent += 1
        m.interval.sent += 1
        if self.plan.mode == LoadMode.OPEN:
            lag = sent - intended
            span.note_lag(lag, self.plan.late_s)
            m.interval.note_lag(lag, self.plan.late_s)
        error: RequestError | None = None
        try:
            async with asyncio.timeout(self.plan.timeout_s):
                await client.send(m.next_payload())
        except TimeoutError:
            error = RequestError("timeout", f"no answer within {self.plan.timeout_s:g} s")
            if isinstance(client, HttpConnection):
                await client.close()
        except RequestError as exc:
            error = exc
        done = clock()
        if error is None:
            latency = done - intended
            m.interval.ok += 1
            m.interval_hist.record_s(latency)
            span.ok += 1
            if not warm:
                m.measured_hist.record_s(latency)
        else:
            m.interval.add_error(error.kind, error.detail)
            span.add_error(error.kind, error.detail)
        if self.on_request is not None:
            self.on_request(RequestRecord(m.plan.name, intended, sent, done, None if error is None else error.kind, warm))
        return None if error is None else error.kind

    # ---- closed loop -----------------------------------------------------------------------------------------
    async def _closed_client(self, m: _ModelRun) -> None:
        client = m.client()
        backoff = 0.0
        try:
            while not self.control.stopped():
                now = clock()
                if now >= self.t_end:
                    break
                kind = await self._request(m, client, now)
                backoff = _next_backoff(backoff, kind)
                until = min(clock() + backoff, self.t_end)
                while clock() < until and not self.control.stopped():
                    await asyncio.sleep(min(_MAX_SLEEP_S, max(0.0, until - clock())))
        finally:
            if isinstance(client, HttpConnection):
                await client.close()

    # ---- open loop -------------------------------------------------------------------------------------------
    def _gap(self, rate: float) -> float:
        return self.rng.expovariate(rate) if self.plan.arrival == Arrival.POISSON else 1.0 / rate

    async def _open_scheduler(self, m: _ModelRun) -> None:
        n = self.plan.n_workers
        rate = self.control.rate(m.plan.index) / n
        # Constant arrivals of several workers interleave: worker w starts w/n of a gap late.
        t = self.t0 + (self._gap(rate) * self.plan.worker / n if rate > 0 else 0.0)
        while not self.control.stopped():
            now = clock()
            rate = self.control.rate(m.plan.index) / n
            if rate <= 0:
                t = now + _IDLE_RATE_POLL_S
                await asyncio.sleep(_IDLE_RATE_POLL_S)
                continue
            while t <= now and t < self.t_end:
                self._dispatch(m, t)
                t += self._gap(rate)
            if t >= self.t_end:
                break
            await asyncio.sleep(min(t - clock(), _MAX_SLEEP_S))

    def _dispatch(self, m: _ModelRun, intended: float) -> None:
        while m.idle:
            fut = m.idle.pop()
            if not fut.done():
                fut.set_result(intended)
                return
        if m.consumers < self.plan.max_connections:
            m.consumers += 1
            task = asyncio.create_task(self._consumer(m, intended))
            m.tasks.add(task)
            task.add_done_callback(m.tasks.discard)
        else:
            m.backlog.append(intended)

    async def _consumer(self, m: _ModelRun, first: float) -> None:
        client = m.client()
        loop = asyncio.get_running_loop()
        intended: float | None = first
        try:
            while intended is not None:
                await self._request(m, client, intended)
                if m.closing or clock() >= self.t_end or self.control.stopped():
                    break
                if m.backlog:
                    intended = m.backlog.popleft()
                else:
                    fut: asyncio.Future[float | None] = loop.create_future()
                    m.idle.append(fut)
                    intended = await fut
        finally:
            m.consumers -= 1
            if isinstance(client, HttpConnection):
                await client.close()


def _next_backoff(current: float, kind: str | None) -> float:
    """The closed-loop wait after a request: none after an answer, growing while the server cannot be reached."""
    if kind not in CONNECTION_ERROR_KINDS:
        return 0.0
    first, most = RECONNECT_BACKOFF_S
    return min(most, current * 2) if current else first
