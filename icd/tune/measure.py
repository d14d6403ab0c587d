"""Measure one configuration at one concurrency on the live server, with icd's load generator.

The measurer reloads the model only when the candidate changes, drives closed-loop load
(:func:`icd.load.run_load`, in this process), and turns the generator's summary into a :class:`LoadPoint` of
typed records. What can go wrong is recorded, not raised: Triton refusing the configuration (``rejected``), the
server dying (``server_died``), the model failing under load (``failed``). Only Ctrl-C raises
(:class:`SearchInterrupted`), so the coordinator can checkpoint and stop.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from icd.errors import UserError
from icd.load.settings import InputSource, LoadSettings
from icd.measure.metrics import Measurement
from icd.tune import model_config
from icd.tune.measurement import ERROR_RATE, SLO_PERCENTILES, THROUGHPUT, LoadPoint, PointStatus, latency_tag
from icd.tune.reload import ConfigRejected, ReloadNotAllowed, ServerGone
from icd.tune.server import TuneServer
from icd.tune.space import Candidate
from icd.tune.variants import Variant

DEFAULT_DURATION_S = 5.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_INPUT_SHAPE = 128


class SearchInterrupted(Exception):
    """Ctrl-C during a measurement: the partial measurement is dropped, the checkpoint keeps the rest."""


class SearchStopped(Exception):
    """Nothing more can be measured: the remote server died, or the private one cannot be restarted."""


@dataclass(frozen=True)
class LoadSpec:
    """What every measurement drives (part of the checkpoint's fingerprint).

    Attributes:
        duration_s: measured seconds per point.
        warmup_s: leading seconds per point sent but not counted (the first requests after a reload are slow).
        input_shape: tokens per request row.
        batch_size: rows per request.
        inputs: ``random`` token ids or real ``text``.
    """

    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = DEFAULT_WARMUP_S
    input_shape: int = DEFAULT_INPUT_SHAPE
    batch_size: int = 1
    inputs: str = InputSource.RANDOM.value

    def settings(self, concurrency: int) -> LoadSettings:
        """Load settings of one point (raises ValueError naming a bad field)."""
        return LoadSettings(duration_s=self.duration_s, warmup_s=self.warmup_s, concurrency=concurrency,
                            input_shape=self.input_shape, batch_size=self.batch_size, inputs=self.inputs, workers=0)

    def describe(self, concurrency: int) -> str:
        return (f"icd load generator, closed loop, {concurrency} clients, {self.duration_s:g} s after "
                f"{self.warmup_s:g} s warm-up, {self.inputs} inputs of {self.batch_size} x {self.input_shape} tokens")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class Measurer:
    """Reload + load + records, for one model on one server."""

    def __init__(self, server: TuneServer, model: str, base: Any, kind: str, load: LoadSpec,
                 variants: Mapping[int, Variant] | None = None) -> None:
        self.server = server
        self.variants = dict(variants or {})
        self.model = model
        self.base = base
        self.kind = kind
        self.load = load
        self.applied: Candidate | None = None

    def config_for(self, candidate: Candidate) -> Any:
        """The ``ModelConfig`` message of ``candidate`` on this model."""
        return model_config.apply_candidate(self.base, candidate, self.kind, self.variants)

    def _failure(self, candidate: Candidate, status: PointStatus, detail: str,
                 concurrency: int | None = None) -> LoadPoint:
        self.applied = None
        return LoadPoint(candidate, concurrency, status, detail=detail, measured_at=_now(),
                         load_average=_load_average())

    def _died(self, candidate: Candidate, detail: str, concurrency: int | None = None) -> LoadPoint:
        point = self._failure(candidate, PointStatus.SERVER_DIED, detail, concurrency)
        if self.server.restartable:
            try:
                self.server.restart()
            except UserError as exc:
                raise SearchStopped(f"{detail}; the private server could not be restarted ({exc})") from None
            point.detail += "; the private server was restarted"
        return point

    def apply(self, candidate: Candidate) -> LoadPoint | None:
        """Load ``candidate`` unless it is loaded; a failure point when it cannot be."""
        if self.applied == candidate:
            return None
        try:
            self.server.apply(model_config.to_json(self.config_for(candidate)))
        except ReloadNotAllowed as exc:
            raise SearchStopped(f"Triton at {self.server.endpoint} stopped allowing model reloads ({exc})") from None
        except ConfigRejected as exc:
            if not self.server.alive():
                return self._died(candidate, f"the server died while loading the configuration ({exc})")
            return self._failure(candidate, PointStatus.REJECTED, f"Triton refused the configuration: {exc}")
        except ServerGone as exc:
            return self._died(candidate, str(exc))
        self.applied = candidate
        return None

    def measure(self, candidate: Candidate, concurrency: int) -> LoadPoint:
        """One point: ``candidate`` loaded, ``concurrency`` closed-loop clients."""
        failed = self.apply(candidate)
        if failed is not None:
            return failed
        from icd.load.runner import run_load
        from icd.load.target import Target

        try:
            report = run_load(self.load.settings(concurrency), Target(self.server.endpoint, (self.model,)))
        except UserError as exc:  # the pre-run check: server or model gone
            if not self.server.alive():
                return self._died(candidate, f"the server died before the load started ({exc})", concurrency)
            return self._failure(candidate, PointStatus.FAILED, f"the model stopped serving: {exc}", concurrency)
        if report.interrupted:
            raise SearchInterrupted(f"interrupted while measuring {candidate.config_id} at concurrency {concurrency}")
        summary = report.model_summary(self.model)
        point = self._point(candidate, concurrency, summary)
        if point.errors and not self.server.alive():
            died = self._died(candidate, "the server died under load; " + point.detail, concurrency)
            died.records, died.requests, died.errors = point.records, point.requests, point.errors
            return died
        return point

    def _point(self, candidate: Candidate, concurrency: int, summary: dict[str, Any]) -> LoadPoint:
        how = self.load.describe(concurrency)
        latency = summary.get("latency_ms", {})
        errors = summary.get("errors", {})
        records = [Measurement(THROUGHPUT, summary.get("throughput_rps"), how),
                   Measurement(ERROR_RATE, errors.get("rate"), how)]
        records += [Measurement(latency_tag(p), latency.get(f"p{p}"), how + "; client-side, from send to last byte")
                    for p in SLO_PERCENTILES]
        samples = "; ".join(f"{kind}: {text}" for kind, text in sorted(errors.get("samples", {}).items()))
        return LoadPoint(candidate, concurrency, PointStatus.OK, {r.tag: r for r in records},
                         requests=int(summary.get("requests") or 0), errors=int(errors.get("total") or 0),
                         detail=samples[:400], measured_at=_now(), load_average=_load_average())
