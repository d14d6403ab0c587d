"""Small fakes for the search logic behind its Protocols (server, measurer). Not used where Triton runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from icd.export.config_pbtxt import parse_config
from icd.measure.metrics import Measurement
from icd.serve.synthetic_model import EchoDelaySpec, echo_delay_config
from icd.tune.measure import SearchInterrupted, SearchStopped
from icd.tune.measurement import THROUGHPUT, LoadPoint, PointStatus, latency_tag
from icd.tune.server import LaunchMode
from icd.tune.space import Candidate


@dataclass
class FakeServer:
    """A server that accepts every configuration (the base is the echo_delay model's config.pbtxt)."""

    base: Any = field(default_factory=lambda: parse_config(echo_delay_config(EchoDelaySpec())))
    endpoint: str = "fake://server"
    launch_mode: LaunchMode = LaunchMode.LOCAL
    restartable: bool = True
    closed_with: list[Any] = field(default_factory=list)

    def base_config(self) -> Any:
        return self.base

    def apply(self, config: dict[str, Any] | None) -> None:
        return None

    def alive(self) -> bool:
        return True

    def restart(self) -> None:
        return None

    def close(self, restore: Any | None) -> None:
        self.closed_with.append(restore)


def surface(candidate: Candidate, concurrency: int) -> tuple[float, float]:
    """A deterministic (throughput, p99 ms) response surface with one best region.

    Capacity grows with batch size and with cores used up to 2 (oversubscription beyond 2 threads costs);
    latency grows with queueing once the offered load passes the capacity, plus the batching delay.
    """
    used = candidate.instance_count * max(candidate.threads, 1)
    cores = min(used, 2) / (1.0 + 0.3 * max(0, used - 2))
    batch = 1.0 + 0.4 * math.log2(candidate.max_batch_size)
    delay_gain = 1.1 if candidate.queue_delay_us and candidate.max_batch_size > 1 else 1.0
    capacity = 50.0 * cores * batch * delay_gain
    service_ms = 20.0
    offered = concurrency * 1000.0 / service_ms
    throughput = min(offered, capacity)
    p99 = service_ms * 1.5 * max(1.0, offered / capacity) + candidate.queue_delay_us / 1000.0
    return throughput, p99


@dataclass
class SurfaceMeasurer:
    """Answers from :func:`surface`; counts calls; can refuse configurations or be interrupted after N points."""

    interrupt_after: int | None = None
    stop_after: int | None = None
    rejected: set[str] = field(default_factory=set)
    calls: list[tuple[str, int]] = field(default_factory=list)
    repeat_p99_factor: float = 1.0
    """A level measured again answers with its p99 times this (> 1: the repeat can break the SLO)."""

    def measure(self, candidate: Candidate, concurrency: int) -> LoadPoint:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise SearchInterrupted("interrupted by the test")
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise SearchStopped("the private server could not be restarted (fake)")
        repeat = (candidate.config_id, concurrency) in self.calls
        self.calls.append((candidate.config_id, concurrency))
        if candidate.config_id in self.rejected:
            return LoadPoint(candidate, None, PointStatus.REJECTED, detail="Triton refused it (fake)")
        throughput, p99 = surface(candidate, concurrency)
        if repeat:
            p99 *= self.repeat_p99_factor
        records = {THROUGHPUT: Measurement(THROUGHPUT, throughput, "fake surface")}
        for p, factor in ((50, 0.5), (95, 0.9), (99, 1.0)):
            records[latency_tag(p)] = Measurement(latency_tag(p), p99 * factor, "fake surface")
        return LoadPoint(candidate, concurrency, PointStatus.OK, records, requests=int(throughput * 2), errors=0)
