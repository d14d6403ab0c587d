"""What a load run does: the typed settings shared by ``icd bench``, ``icd simulate`` and the library API.

Defaults are the named constants below; the CLI declares each option once with its long flag, its ``ICD_LOAD_*``
environment variable and its config-file key (the field name), Locust style.
"""

from __future__ import annotations

import math

import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

DEFAULT_DURATION_S = 60.0
DEFAULT_WARMUP_S = 0.0
DEFAULT_CONCURRENCY = 1
DEFAULT_BATCH_SIZE = 1
DEFAULT_INPUT_SHAPE = 128
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_LATE_MS = 5.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_POOL_SIZE = 64
DEFAULT_SEED = 0


class LoadMode(str, Enum):
    """How requests are paced."""

    CLOSED = "closed"
    """``concurrency`` clients, each sending its next request when the last one returns; latency from send."""
    OPEN = "open"
    """Arrivals at ``rate`` per second whatever the server does; latency from the *intended* send time."""


class Arrival(str, Enum):
    """Inter-arrival times of the open loop."""

    CONSTANT = "constant"
    """Evenly spaced: 1/rate apart."""
    POISSON = "poisson"
    """Exponentially distributed gaps with mean 1/rate (a Poisson process)."""


class Protocol(str, Enum):
    """Wire protocol to the server (KServe v2 inference protocol either way)."""

    HTTP = "http"
    GRPC = "grpc"


class InputSource(str, Enum):
    """Where request inputs come from."""

    TEXT = "text"
    """Real English text (stdlib docstrings, :mod:`icd.data.corpus`) tokenized by the MiniLM tokenizer."""
    RANDOM = "random"
    """Random token ids (synthetic), every position attended."""


class SettingError(ValueError):
    """A load setting out of range: ``field`` (the LoadSettings attribute) and the ``value`` given."""

    def __init__(self, field_name: str, value: Any) -> None:
        super().__init__(f"load setting {field_name}: invalid value {value!r}")
        self.field = field_name
        self.value = value

    @property
    def flag(self) -> str:
        """The option of the field: ``duration_s`` → ``--duration``, ``input_shape`` → ``--input-shape``."""
        return "--" + self.field.removesuffix("_s").replace("_", "-")


@dataclass
class LoadSettings:
    """One load run. Open loop when ``rate`` is set, closed loop otherwise.

    Attributes:
        duration_s: measured time after the warm-up.
        warmup_s: leading time whose requests are sent but excluded from the statistics.
        concurrency: closed loop: clients per model; open loop: ignored.
        rate: open loop: arrivals per second per model (a load shape may change it while running).
        arrival: open loop inter-arrival law.
        batch_size: rows per request.
        input_shape: sequence length of every request (tokens, padded/truncated).
        inputs: real tokenized text or random ids.
        protocol: HTTP or gRPC.
        timeout_s: a request not answered by then counts as a ``timeout`` error.
        late_ms: an open-loop send made more than this after its intended time is counted late.
        max_connections: open loop: most requests in flight per model per worker (HTTP connections).
        workers: generator processes (0 = run in the calling process; needed for ``on_request`` hooks).
        pool_size: distinct request bodies cycled through.
        seed: seeds text sampling, random ids and Poisson gaps.
    """

    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = DEFAULT_WARMUP_S
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None
    arrival: Arrival = Arrival.CONSTANT
    batch_size: int = DEFAULT_BATCH_SIZE
    input_shape: int = DEFAULT_INPUT_SHAPE
    inputs: InputSource = InputSource.TEXT
    protocol: Protocol = Protocol.HTTP
    timeout_s: float = DEFAULT_TIMEOUT_S
    late_ms: float = DEFAULT_LATE_MS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    pool_size: int = DEFAULT_POOL_SIZE
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        self.arrival = Arrival(self.arrival)
        self.protocol = Protocol(self.protocol)
        self.inputs = InputSource(self.inputs)
        self.validate()

    @property
    def mode(self) -> LoadMode:
        return LoadMode.CLOSED if self.rate is None else LoadMode.OPEN

    def validate(self) -> None:
        """Raise :class:`SettingError` (a ``ValueError``) naming the field and value of the first bad setting."""
        checks: list[tuple[str, Any, bool]] = [
            ("duration_s", self.duration_s, math.isfinite(self.duration_s) and self.duration_s > 0),
            ("warmup_s", self.warmup_s, math.isfinite(self.warmup_s) and self.warmup_s >= 0),
            ("concurrency", self.concurrency, self.concurrency >= 1),
            ("rate", self.rate, self.rate is None or (math.isfinite(self.rate) and self.rate >= 0)),
            ("batch_size", self.batch_size, self.batch_size >= 1),
            ("input_shape", self.input_shape, 1 <= self.input_shape <= 8192),
            ("timeout_s", self.timeout_s, math.isfinite(self.timeout_s) and self.timeout_s > 0),
            ("late_ms", self.late_ms, math.isfinite(self.late_ms) and self.late_ms > 0),
            ("max_connections", self.max_connections, self.max_connections >= 1),
            ("workers", self.workers, 0 <= self.workers <= 64),
            ("pool_size", self.pool_size, self.pool_size >= 1),
        ]
        for name, value, ok in checks:
            if not ok:
                raise SettingError(name, value)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mode"] = self.mode.value
        for key in ("arrival", "protocol", "inputs"):
            out[key] = out[key].value
        return out
