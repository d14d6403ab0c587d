"""``run_load``: the library entry point shared by ``icd bench``, ``icd simulate``, rollouts and monitoring tests.

The coordinator checks the target before any load, starts the workers (processes, or one engine in the calling
process when ``settings.workers == 0``), releases them together, merges their per-interval messages, steers the
rate with load shapes, and returns a :class:`LoadReport`. Ctrl-C (SIGINT, when called from the main thread)
stops the run and returns the partial report with ``interrupted=True``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue as queue_mod
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone

from icd.errors import UserError
from icd.load.aggregate import Aggregator, IntervalRow
from icd.load.control import Control, LocalControl, SharedControl
from icd.load.engine import INTERVAL_S, Engine, WorkerPlan
from icd.load.exporter import MetricsExporter
from icd.load.hooks import Hooks
from icd.load.plan import build_worker_plans
from icd.load.problems import stopped_answering
from icd.load.progress import LiveProgress
from icd.load.report import LoadReport
from icd.load.settings import LoadMode, LoadSettings
from icd.load.shapes import LoadShape
from icd.load.stats import FinalMessage, IntervalMessage, ReadyMessage
from icd.load.target import Target, check_target

START_DELAY_S = 0.2
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
_POLL_S = 0.05
WORKER_START_METHOD = "spawn"


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_load(
    settings: LoadSettings,
    target: Target,
    *,
    hooks: Hooks | None = None,
    shapes: Mapping[str, LoadShape] | None = None,
    progress: bool = False,
    metrics_port: int | None = None,
    stop: threading.Event | None = None,
) -> LoadReport:
    """Check ``target``, drive load as ``settings`` say, and return the report (partial if interrupted).

    Args:
        settings: mode (``rate`` set → open loop), duration, inputs, protocol, workers...
        target: endpoint and model names; every model gets the same settings (``rate`` / ``concurrency`` each).
        hooks: ``on_start`` / ``on_request`` (``workers=0`` only) / ``on_interval`` / ``on_stop`` listeners.
        shapes: per-model load shapes steering the open-loop rate every interval (``tick`` → rate or ``None``).
        progress: show a live rich progress line.
        metrics_port: serve the generator's own metrics for Prometheus on this port while running.
        stop: set it (from another thread) to end the run early; the report is then partial (``interrupted``).

    Raises:
        UserError: unreachable endpoint, model not ready, bad shape, port in use — all before any load.
        ValueError: inconsistent settings (e.g. ``on_request`` listeners with worker processes).
    """
    hooks = hooks or Hooks()
    if hooks.on_request and settings.workers > 0:
        raise ValueError("on_request hooks need LoadSettings.workers=0 (the generator in this process)")
    if shapes is not None:
        if settings.mode != LoadMode.OPEN:
            raise ValueError("load shapes drive an open loop: set LoadSettings.rate")
        missing = set(target.models) - set(shapes)
        if missing:
            raise ValueError(f"shapes: no shape for model(s) {sorted(missing)}")
    infos = check_target(target, settings.protocol)
    plans = build_worker_plans(settings, target, infos)
    run = _Coordinator(settings, target, plans, hooks, shapes, progress, metrics_port, stop)
    run.start_workers()
    try:
        return asyncio.run(run.main())
    finally:
        run.reap_workers()


class _Coordinator:
    def __init__(self, settings: LoadSettings, target: Target, plans: list[WorkerPlan], hooks: Hooks,
                 shapes: Mapping[str, LoadShape] | None, progress: bool, metrics_port: int | None,
                 stop: threading.Event | None = None) -> None:
        self.stop_event = stop
        self.settings = settings
        self.target = target
        self.plans = plans
        self.hooks = hooks
        self.shapes = dict(shapes) if shapes else None
        self.progress = progress
        self.metrics_port = metrics_port
        self.models = list(target.models)
        rates = [settings.rate or 0.0] * len(self.models)
        if self.shapes:
            rates = [self.shapes[m].tick(0.0) or 0.0 for m in self.models]
        self.in_process = settings.workers == 0
        if self.in_process:
            self.control: Control = LocalControl(rates)
        else:
            # spawn, never fork: a fork copies the caller's threads' locks but not the threads. A caller that has
            # used gRPC (check_target does, tests and rollouts do) holds gRPC's timer/poller threads, and a forked
            # worker that opens a gRPC channel then waits on a lock nobody will release (seen: a futex hang).
            # Like any spawn, a caller's script must guard its entry point (`if __name__ == "__main__":`).
            self.ctx = mp.get_context(WORKER_START_METHOD)
            self.control = SharedControl(self.ctx, rates)
        self.agg = Aggregator(self.models, len(plans), INTERVAL_S, settings.warmup_s)
        self.interrupted = False
        self.problems: list[str] = []
        self._inbox: deque[object] = deque()
        self.procs: list = []
        self.queue: mp.Queue | None = None
        self._shape_done: set[str] = set()

    async def main(self) -> LoadReport:
        exporter = MetricsExporter(self.metrics_port) if self.metrics_port else None
        started = _now_iso()
        self._install_sigint()
        try:
            with LiveProgress(self.settings.warmup_s + self.settings.duration_s, self.progress) as live:
                if self.in_process:
                    await self._run_in_process(live, exporter)
                else:
                    await self._run_processes(live, exporter)
        finally:
            self._remove_sigint()
            if exporter is not None:
                exporter.close()
        self.problems += stopped_answering(self.target.endpoint, self.agg.totals, self.agg.series)
        report = LoadReport(
            settings=self.settings, target=self.target, totals=self.agg.totals, series=self.agg.series,
            duration_s=self.agg.measured_duration_s, started=started, finished=_now_iso(),
            interrupted=self.interrupted, workers=len(self.plans), problems=self.problems,
        )
        self.hooks.on_stop.fire(report)
        return report

    # ---- SIGINT -------------------------------------------------------------------------------------------
    def _install_sigint(self) -> None:
        self._sigint = False
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_sigint)
            self._sigint = True

    def _remove_sigint(self) -> None:
        if self._sigint:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    def _on_sigint(self) -> None:
        self.interrupted = True
        self.control.stop()

    # ---- running ------------------------------------------------------------------------------------------
    async def _run_in_process(self, live: LiveProgress, exporter: MetricsExporter | None) -> None:
        on_request = self.hooks.on_request.fire if self.hooks.on_request else None
        engine = Engine(self.plans[0], self.control, self._inbox.append, on_request)
        self._release()
        task = asyncio.create_task(engine.run())
        while not task.done():
            self._pump(self._take_inbox(), live, exporter)
            await asyncio.sleep(_POLL_S)
        await task
        self._pump(self._take_inbox(), live, exporter)
        self._finish(live, exporter)

    def _take_inbox(self) -> list[object]:
        items = []
        while self._inbox:
            items.append(self._inbox.popleft())
        return items

    def start_workers(self) -> None:
        if self.in_process:
            return
        from icd.load.worker import worker_main

        self.queue = self.ctx.Queue()
        self.procs = [self.ctx.Process(target=worker_main, args=(p, self.control, self.queue), daemon=True)
                      for p in self.plans]
        for proc in self.procs:
            proc.start()

    def reap_workers(self) -> None:
        self.control.stop()
        for proc in self.procs:
            proc.join(timeout=STOP_GRACE_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if self.queue is not None:
            self.queue.close()

    async def _run_processes(self, live: LiveProgress, exporter: MetricsExporter | None) -> None:
        q, procs = self.queue, self.procs
        assert q is not None
        await self._wait_ready(q, procs)
        self._release()
        # workers end their load at t_end and drain for at most timeout_s; past that a worker is stuck
        stop_deadline = (self.t0 + self.settings.warmup_s + self.settings.duration_s
                         + self.settings.timeout_s + STOP_GRACE_S)
        while self.agg.finals < len(procs):
            self._pump(_drain(q), live, exporter)
            if self.control.stopped():  # the first time counts: later ones only give later times
                stop_deadline = min(stop_deadline, time.monotonic() + self.settings.timeout_s + STOP_GRACE_S)
            dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
            if dead or time.monotonic() > stop_deadline:
                self.problems.append(f"{len(dead)} worker(s) died (exit codes {[p.exitcode for p in dead]})"
                                     if dead else "workers did not stop in time")
                self.control.stop()
                await asyncio.sleep(0.5)
                self._pump(_drain(q), live, exporter)
                break
            await asyncio.sleep(_POLL_S)
        self._finish(live, exporter)

    async def _wait_ready(self, q: mp.Queue, procs: list) -> None:
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready < len(procs):
            for msg in _drain(q):
                ready += isinstance(msg, ReadyMessage)
            if any(not p.is_alive() for p in procs):
                raise UserError("load generator: a worker process failed to start (its error is above; a script "
                                "that calls run_load needs `if __name__ == \"__main__\":`, workers are spawned)")
            if time.monotonic() > deadline:
                raise UserError(f"load generator: workers not ready after {READY_TIMEOUT_S:.0f} s")
            if self.control.stopped():
                return
            await asyncio.sleep(0.01)

    def _release(self) -> None:
        self.t0 = time.monotonic() + START_DELAY_S
        self.control.set_start_at(self.t0)
        self._next_tick = 1.0
        self.hooks.on_start.fire(self.target, self.settings)

    def _pump(self, messages: list[object], live: LiveProgress, exporter: MetricsExporter | None) -> None:
        if self.stop_event is not None and self.stop_event.is_set() and not self.control.stopped():
            self._on_sigint()
        for msg in messages:
            if isinstance(msg, IntervalMessage):
                self._on_rows(self.agg.add_interval(msg), live, exporter)
            elif isinstance(msg, FinalMessage):
                self.agg.add_final(msg)
        self._tick_shapes()

    def _finish(self, live: LiveProgress, exporter: MetricsExporter | None) -> None:
        self._on_rows(self.agg.flush(), live, exporter)

    def _on_rows(self, rows: list[IntervalRow], live: LiveProgress, exporter: MetricsExporter | None) -> None:
        for row in rows:
            live.update(row)
            if exporter is not None:
                exporter.update(row)
            if self.shapes:
                self.shapes[row.model].observe(row)
            self.hooks.on_interval.fire(row)

    def _tick_shapes(self) -> None:
        if not self.shapes or self.control.start_at() <= 0:
            return
        run_time = time.monotonic() - self.t0
        if run_time < self._next_tick:
            return
        self._next_tick = float(int(run_time)) + 1.0
        for i, name in enumerate(self.models):
            if name in self._shape_done:
                continue
            rate = self.shapes[name].tick(run_time)
            if rate is None:
                self._shape_done.add(name)
                rate = 0.0
            self.control.set_rate(i, rate)
        if len(self._shape_done) == len(self.models):
            self.control.stop()


def _drain(q: mp.Queue) -> list[object]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue_mod.Empty:
            return out
