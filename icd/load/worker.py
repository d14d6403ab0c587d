"""Entry point of a generator worker process (spawned; ignores Ctrl-C, the coordinator stops it)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import signal

from icd.load.control import SharedControl
from icd.load.engine import Engine, WorkerPlan
from icd.load.stats import ReadyMessage


def worker_main(plan: WorkerPlan, control: SharedControl, queue: mp.Queue) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine = Engine(plan, control, queue.put)
    queue.put(ReadyMessage(plan.worker))
    asyncio.run(engine.run())
