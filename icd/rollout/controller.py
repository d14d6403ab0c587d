"""The rollout controller loop: tick every interval until the rollout ends (or a deadline), resumable.

Only one controller may drive a state directory (an ``flock`` on ``controller.lock``). A restarted controller
waits out the rest of the interval that was running when it died, then ticks on. Traffic a ``load-test`` webhook
started is stopped when the loop ends.

Example:
    final = run_controller(scheduler, deadline_s=3600)
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable
from pathlib import Path

from icd.errors import UserError
from icd.rollout.scheduler import RolloutScheduler
from icd.rollout.status_store import CanaryStatus

LOCK_FILE = "controller.lock"


def run_controller(
    scheduler: RolloutScheduler,
    deadline_s: float | None = None,
    on_tick: Callable[[CanaryStatus], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryStatus:
    """Tick ``scheduler`` each ``interval_s`` until a terminal phase or ``deadline_s`` seconds have passed."""
    lock_path = Path(scheduler.store.state_dir) / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{lock_path}: another controller drives this canary") from None
        start = time.monotonic()
        spec, status = scheduler.status()
        try:
            while not status.phase.is_terminal:
                if status.tick > 0:
                    wait = status.updated + spec.interval_s - scheduler.clock()
                    if deadline_s is not None and time.monotonic() - start + max(wait, 0) > deadline_s:
                        break
                    if wait > 0:
                        sleep(wait)
                status = scheduler.tick()
                if on_tick is not None:
                    on_tick(status)
        finally:
            if scheduler.hooks is not None:
                scheduler.hooks.stop()
        return status
