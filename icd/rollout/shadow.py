"""The shadow comparator: judge a candidate on mirrored live requests, without ever answering a client with it.

nginx ``mirror`` sends a sampled share of the router's inference requests here (``POST /shadow``, with the
headers ``X-ICD-Primary`` — the variant that answered the client —, ``X-ICD-Candidate``, ``X-ICD-Upstream`` and
``X-ICD-Request-Id``). The comparator answers ``204 No Content`` at once (nginx discards it anyway), queues the
request, and a worker then sends the same body to the primary and to the candidate on the upstream Triton,
concurrently, and records per request:

* output agreement in the figures that fit the task (:mod:`icd.rollout.agreement`): cosine for embeddings (and
  nearest-neighbour agreement over the last :data:`NN_WINDOW` requests), argmax agreement and logit cosine for
  classifiers;
* latency of candidate and primary (both asked at the same moment, so the host's state is shared);
* failures of either side.

Each comparison is one JSON line in ``shadow.jsonl`` (read by the mirror strategy's analysis) and updates the
``icd_shadow_*`` Prometheus series on ``GET /metrics``. A full queue drops the mirrored request (counted as
``outcome="dropped"``): shadowing never slows the primary path.

Run next to the router: ``python -m icd.rollout.shadow --port P --log <router dir>/shadow.jsonl``
(``icd router mirror`` does it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from icd.defaults import LOOPBACK
from icd.rollout.agreement import OutputTask, cosine_rows, nearest_other, task_for_output
from icd.rollout.router_exporter import BUCKETS_S
from icd.rollout.router_log import JsonlTail

SHADOW_LOG = "shadow.jsonl"
DEFAULT_WORKERS = 4
DEFAULT_QUEUE = 256
DEFAULT_TIMEOUT_S = 30.0
NN_WINDOW = 128
"""Nearest-neighbour agreement of embeddings is computed over the last this many compared requests."""
NN_EVERY = 16
COSINE_BUCKETS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0)
HEADER_PRIMARY = "X-ICD-Primary"
HEADER_CANDIDATE = "X-ICD-Candidate"
HEADER_UPSTREAM = "X-ICD-Upstream"
HEADER_REQUEST_ID = "X-ICD-Request-Id"


class Outcome:
    """The closed set of ``outcome`` values of a shadow record / ``icd_shadow_requests_total``."""

    COMPARED = "compared"
    PRIMARY_ERROR = "primary_error"
    CANDIDATE_ERROR = "candidate_error"
    SKIPPED = "skipped"
    DROPPED = "dropped"
    ALL = (COMPARED, PRIMARY_ERROR, CANDIDATE_ERROR, SKIPPED, DROPPED)


@dataclass(frozen=True)
class ShadowRecord:
    """One mirrored request, judged."""

    t: float
    rid: str
    primary: str
    candidate: str
    outcome: str
    task: str = ""
    primary_ms: float | None = None
    candidate_ms: float | None = None
    cosine: float | None = None
    """Cosine of the two outputs (embeddings: of the vectors; classifiers: of the logits)."""
    argmax_agree: bool | None = None
    """Classifiers: same predicted class."""
    error: str = ""


def parse_shadow_line(line: str) -> ShadowRecord | None:
    """One ``shadow.jsonl`` line → record; ``None`` for a partial line."""
    try:
        return ShadowRecord(**json.loads(line))
    except (ValueError, TypeError):
        return None


class ShadowLogReader(JsonlTail[ShadowRecord]):
    """Incremental reader of ``shadow.jsonl``."""

    def __init__(self, path: str | Path, keep_s: float = 3600.0) -> None:
        super().__init__(path, parse_shadow_line, keep_s)


class ShadowMetrics:
    """The ``icd_shadow_*`` series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        pc = ["primary", "candidate"]
        self.requests = Counter("icd_shadow_requests", "Mirrored requests, by outcome.", [*pc, "outcome"],
                                registry=registry)
        self.cosine = Histogram("icd_shadow_cosine", "Cosine of candidate vs primary outputs per mirrored request "
                                "(embeddings: vectors; classifiers: logits).", [*pc, "task"],
                                buckets=COSINE_BUCKETS, registry=registry)
        self.argmax = Counter("icd_shadow_argmax_agreements", "Mirrored classifier requests with the same argmax.",
                              pc, registry=registry)
        self.nn = Gauge("icd_shadow_nn_agreement", f"Nearest-neighbour agreement of embeddings over the last "
                        f"{NN_WINDOW} mirrored requests.", pc, registry=registry)
        self.cos_min = Gauge("icd_shadow_cosine_window_min", f"Lowest cosine over the last {NN_WINDOW} mirrored "
                             "requests.", pc, registry=registry)
        self.latency = Histogram("icd_shadow_latency_seconds", "Latency of the comparator's request to each side.",
                                 [*pc, "role"], buckets=BUCKETS_S, registry=registry)
        self.queue = Gauge("icd_shadow_queue_depth", "Mirrored requests waiting to be compared.", registry=registry)
        self._seen: set[tuple[str, str]] = set()

    def pair(self, primary: str, candidate: str) -> None:
        """Create every series of a (primary, candidate) pair at 0, so that rates exist before the first error."""
        if (primary, candidate) in self._seen:
            return
        self._seen.add((primary, candidate))
        for outcome in Outcome.ALL:
            self.requests.labels(primary, candidate, outcome)
        self.argmax.labels(primary, candidate)


@dataclass
class _Job:
    body: bytes
    primary: str
    candidate: str
    upstream: str
    rid: str


def _output(body: dict[str, Any]) -> tuple[str, np.ndarray]:
    out = body["outputs"][0]
    return str(out.get("name", "")), np.asarray(out["data"], dtype=float).ravel()


class _Window:
    """The last :data:`NN_WINDOW` output pairs of one (primary, candidate) pair."""

    def __init__(self) -> None:
        self.ref: deque[np.ndarray] = deque(maxlen=NN_WINDOW)
        self.cand: deque[np.ndarray] = deque(maxlen=NN_WINDOW)
        self.cos: deque[float] = deque(maxlen=NN_WINDOW)
        self.count = 0


class Comparator:
    """Queue mirrored requests, ask primary and candidate, record the comparison."""

    def __init__(self, log_path: Path, workers: int = DEFAULT_WORKERS, queue_size: int = DEFAULT_QUEUE,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.log_path = Path(log_path)
        self.workers = workers
        self.timeout_s = timeout_s
        self.registry = CollectorRegistry()
        self.metrics = ShadowMetrics(self.registry)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(queue_size)
        self.windows: dict[tuple[str, str], _Window] = {}
        self._log: IO[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: ClientSession | None = None

    # -- HTTP handlers ---------------------------------------------------------------------------------------
    async def shadow(self, request: web.Request) -> web.Response:
        body = await request.read()
        job = _Job(body, request.headers.get(HEADER_PRIMARY, ""), request.headers.get(HEADER_CANDIDATE, ""),
                   request.headers.get(HEADER_UPSTREAM, ""), request.headers.get(HEADER_REQUEST_ID, ""))
        self.metrics.pair(job.primary, job.candidate)
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.requests.labels(job.primary, job.candidate, Outcome.DROPPED).inc()
        self.metrics.queue.set(self.queue.qsize())
        return web.Response(status=204)

    async def metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"queue": self.queue.qsize(), "log": str(self.log_path)})

    # -- comparison ------------------------------------------------------------------------------------------
    async def _ask(self, upstream: str, model: str, body: bytes) -> tuple[float, dict[str, Any] | str]:
        assert self._session is not None
        t0 = time.perf_counter()
        try:
            async with self._session.post(f"http://{upstream}/v2/models/{model}/infer", data=body,
                                          headers={"Content-Type": "application/json"}) as resp:
                text = await resp.text()
                elapsed = time.perf_counter() - t0
                if resp.status != 200:
                    return elapsed, f"HTTP {resp.status}: {text[:120]}"
                return elapsed, json.loads(text)
        except (ClientError, asyncio.TimeoutError, ValueError) as exc:
            return time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"

    def _write(self, record: ShadowRecord) -> None:
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("a", encoding="utf-8")
        self._log.write(json.dumps(asdict(record), sort_keys=True) + "\n")
        self._log.flush()

    def _window_update(self, job: _Job, ref: np.ndarray, cand: np.ndarray, cos: float, task: OutputTask) -> None:
        win = self.windows.setdefault((job.primary, job.candidate), _Window())
        win.cos.append(cos)
        win.count += 1
        self.metrics.cos_min.labels(job.primary, job.candidate).set(min(win.cos))
        if task is OutputTask.EMBEDDING and ref.shape == cand.shape:
            if win.ref and win.ref[-1].shape != ref.shape:
                win.ref.clear(), win.cand.clear()
            win.ref.append(ref)
            win.cand.append(cand)
            if len(win.ref) >= 3 and (win.count % NN_EVERY == 0 or len(win.ref) < NN_EVERY):
                nn = float(np.mean(nearest_other(np.stack(win.ref)) == nearest_other(np.stack(win.cand))))
                self.metrics.nn.labels(job.primary, job.candidate).set(nn)

    async def compare(self, job: _Job) -> ShadowRecord:
        m = self.metrics
        now = time.time()
        if not (job.primary and job.candidate and job.upstream) or job.primary == job.candidate:
            m.requests.labels(job.primary, job.candidate, Outcome.SKIPPED).inc()
            return ShadowRecord(now, job.rid, job.primary, job.candidate, Outcome.SKIPPED,
                                error="missing headers, or the client was served by the candidate itself")
        (tp, primary), (tc, candidate) = await asyncio.gather(self._ask(job.upstream, job.primary, job.body),
                                                              self._ask(job.upstream, job.candidate, job.body))
        m.latency.labels(job.primary, job.candidate, "primary").observe(tp)
        m.latency.labels(job.primary, job.candidate, "candidate").observe(tc)
        base = dict(t=now, rid=job.rid, primary=job.primary, candidate=job.candidate, primary_ms=tp * 1e3,
                    candidate_ms=tc * 1e3)
        if isinstance(primary, str):
            m.requests.labels(job.primary, job.candidate, Outcome.PRIMARY_ERROR).inc()
            return ShadowRecord(**base, outcome=Outcome.PRIMARY_ERROR, error=primary)
        if isinstance(candidate, str):
            m.requests.labels(job.primary, job.candidate, Outcome.CANDIDATE_ERROR).inc()
            return ShadowRecord(**base, outcome=Outcome.CANDIDATE_ERROR, error=candidate)
        try:
            name, ref = _output(primary)
            _, cand = _output(candidate)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            m.requests.labels(job.primary, job.candidate, Outcome.CANDIDATE_ERROR).inc()
            return ShadowRecord(**base, outcome=Outcome.CANDIDATE_ERROR, error=f"unreadable output: {exc}")
        task = task_for_output(name)
        if ref.shape != cand.shape:
            m.requests.labels(job.primary, job.candidate, Outcome.CANDIDATE_ERROR).inc()
            return ShadowRecord(**base, outcome=Outcome.CANDIDATE_ERROR, task=task.value,
                                error=f"output shape {cand.shape} != primary {ref.shape}")
        cos = float(cosine_rows(ref, cand)[0])
        agree = bool(ref.argmax() == cand.argmax()) if task is OutputTask.CLASSIFIER else None
        m.requests.labels(job.primary, job.candidate, Outcome.COMPARED).inc()
        m.cosine.labels(job.primary, job.candidate, task.value).observe(cos)
        if agree:
            m.argmax.labels(job.primary, job.candidate).inc()
        self._window_update(job, ref, cand, cos, task)
        return ShadowRecord(**base, outcome=Outcome.COMPARED, task=task.value, cosine=cos, argmax_agree=agree)

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                self._write(await self.compare(job))
            finally:
                self.queue.task_done()
                self.metrics.queue.set(self.queue.qsize())

    async def start(self, _: web.Application) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=self.timeout_s))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self, _: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
        if self._log is not None:
            self._log.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/shadow", self.shadow)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/healthz", self.health)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="shadow.jsonl to append comparisons to")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--queue", type=int, default=DEFAULT_QUEUE)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = parser.parse_args()
    comparator = Comparator(Path(args.log), args.workers, args.queue, args.timeout)
    web.run_app(comparator.app(), host=LOOPBACK, port=args.port, print=None, access_log=None,
                handle_signals=True)  # SIGTERM / SIGINT: graceful exit


if __name__ == "__main__":
    main()
