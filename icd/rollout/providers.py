"""Metric providers behind one Protocol: Prometheus (PromQL templates) and the router's access log.

A provider returns the check's value, or raises :class:`NoValuesFound` when there is nothing to judge yet
(no traffic, too few samples, an empty PromQL result) — which the analysis treats as "no data", not failure.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import numpy as np

from icd.rollout.canary_spec import MetricCheck, MetricKind
from icd.rollout.router_log import AccessLogReader, RouterRecord


class NoValuesFound(Exception):
    """The provider has no values for the query yet (Flagger's ``ErrNoValuesFound``)."""


class ProviderError(RuntimeError):
    """The provider could not be asked (unreachable, bad query)."""


@dataclass(frozen=True)
class QueryContext:
    """What a check is evaluated for."""

    primary: str
    canary: str
    interval_s: float
    min_samples: int = 1


class MetricProvider(Protocol):
    """Evaluates one metric check; raises :class:`NoValuesFound` or :class:`ProviderError`."""

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        """Return ``(value, how)``: the value and the query / computation that produced it."""
        ...


class PrometheusProvider:
    """Runs a check's rendered PromQL against a Prometheus HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def run_query(self, query: str) -> float:
        """The single scalar value of an instant query."""
        try:
            resp = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ProviderError(f"prometheus {self.url} unreachable: {exc}") from exc
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise ProviderError(f"prometheus rejected query: {body.get('error', resp.status_code)}: {query}")
        result = body["data"]["result"]
        if not result:
            raise NoValuesFound(query)
        value = float(result[0]["value"][1])
        if not math.isfinite(value):
            raise NoValuesFound(f"{query} = {value}")
        return value

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        query = check.render(ctx.canary, ctx.primary, ctx.interval_s)
        return self.run_query(query), query


def _p95_s(records: list[RouterRecord]) -> float:
    return float(np.percentile([r.request_time_s for r in records], 95))


class AccessLogProvider:
    """Computes the standard relative checks from the router's access log over the last interval."""

    def __init__(self, access_log: str | Path, clock=time.time) -> None:
        self.reader = AccessLogReader(access_log)
        self.clock = clock

    def _window(self, ctx: QueryContext) -> tuple[list[RouterRecord], list[RouterRecord]]:
        recent = self.reader.since(self.clock() - ctx.interval_s)
        prim = [r for r in recent if r.variant == ctx.primary]
        can = [r for r in recent if r.variant == ctx.canary]
        if len(prim) < ctx.min_samples or len(can) < ctx.min_samples:
            raise NoValuesFound(f"{len(prim)} {ctx.primary} / {len(can)} {ctx.canary} requests in the last "
                                f"{ctx.interval_s:g}s (< {ctx.min_samples})")
        return prim, can

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        prim, can = self._window(ctx)
        how = f"router access log, last {ctx.interval_s:g}s, n={len(prim)}/{len(can)}"
        if check.kind is MetricKind.P95_LATENCY_INCREASE_PCT:
            p_prim, p_can = _p95_s(prim), _p95_s(can)
            if p_prim <= 0:
                raise NoValuesFound(f"primary p95 is {p_prim}s (below nginx's 1 ms resolution)")
            return 100.0 * (p_can / p_prim - 1.0), f"{how}; p95 {p_can * 1e3:.1f} ms vs {p_prim * 1e3:.1f} ms"
        if check.kind is MetricKind.ERROR_RATE_DIFF_PP:
            e_prim = sum(r.is_error for r in prim) / len(prim)
            e_can = sum(r.is_error for r in can) / len(can)
            return 100.0 * (e_can - e_prim), f"{how}; error rate {e_can:.3%} vs {e_prim:.3%}"
        raise ProviderError(f"check {check.name!r}: kind {check.kind.value} needs the Prometheus provider")
