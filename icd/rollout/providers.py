"""Metric providers behind one Protocol: the router's access log, the shadow comparator's log, Prometheus.

A provider returns a check's value, or raises :class:`NoValuesFound` when there is nothing to judge yet (no
traffic, too few samples, an empty PromQL result) — which the analysis treats as "no data", not failure — or
:class:`ProviderError` when it could not be asked (Prometheus unreachable, not Prometheus, a rejected query):
the analysis then fails the check with that message, so the rollout is held and, at its threshold, rolled back.

Every window is summarised by :func:`icd.rollout.window.side_stats` (one definition of p95 and error rate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from icd.monitor.client import PrometheusClient, PrometheusQueryError, PrometheusUnavailable
from icd.rollout.canary_spec import SHADOW_METRIC_KINDS, MetricCheck, MetricKind
from icd.rollout.router_log import AccessLogReader, RouterRecord
from icd.rollout.shadow import Outcome, ShadowLogReader, ShadowRecord
from icd.rollout.window import SideStats, relative_increase_pct, side_stats

ROUTER_KINDS = frozenset({MetricKind.P95_LATENCY_INCREASE_PCT, MetricKind.ERROR_RATE_DIFF_PP,
                          MetricKind.P95_LATENCY_MS, MetricKind.ERROR_RATE_PCT})
SHADOW_KINDS = SHADOW_METRIC_KINDS


class NoValuesFound(Exception):
    """The provider has no values for the query yet (Flagger's ``ErrNoValuesFound``)."""


class ProviderError(RuntimeError):
    """The provider could not be asked (unreachable, not the expected server, bad query)."""


@dataclass(frozen=True)
class QueryContext:
    """What a check is evaluated for."""

    primary: str
    canary: str
    interval_s: float
    min_samples: int = 1
    by: str = "variant"
    """Router records are split by ``variant`` (canary, A/B) or by ``colour`` (blue-green)."""


class MetricProvider(Protocol):
    """Evaluates one metric check; raises :class:`NoValuesFound` or :class:`ProviderError`."""

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        """Return ``(value, how)``: the value and the query / computation that produced it."""
        ...


class PrometheusProvider:
    """Runs a check's rendered PromQL against Prometheus (through :class:`icd.monitor.client.PrometheusClient`).

    ``icd:*`` recording rules in a query are expanded into their expressions (from the shipped rules file), so a
    Prometheus that scrapes the series but does not load icd's rules answers too.
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _expand(self, query: str) -> str:
        from icd.monitor.paths import RULES_FILE, monitoring_dir
        from icd.monitor.rules import load_rules

        return load_rules(monitoring_dir() / RULES_FILE).expand(query) if "icd:" in query else query

    def run_query(self, query: str) -> float:
        """The single scalar value of an instant query."""
        try:
            with PrometheusClient(self.url, self.timeout_s) as client:
                samples = client.query(self._expand(query))
        except PrometheusUnavailable as exc:
            raise ProviderError(str(exc)) from None
        except PrometheusQueryError as exc:
            raise ProviderError(f"Prometheus at {self.url} rejected the query ({exc}): {query}") from None
        if not samples:
            raise NoValuesFound(query)
        value = samples[0].value
        if not math.isfinite(value):
            raise NoValuesFound(f"{query} = {value}")
        return value

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        selector = f'{ctx.by}="{ctx.canary}"'
        query = check.render(ctx.canary, ctx.primary, ctx.interval_s, selector)
        if not query:
            raise ProviderError(f"check {check.name!r}: no PromQL for kind {check.kind.value}")
        return self.run_query(query), query


def _stats(records: list[RouterRecord]) -> SideStats:
    return side_stats([r.request_time_s for r in records], [r.is_error for r in records])


class AccessLogProvider:
    """Computes the router checks from the router's access log over the last interval."""

    def __init__(self, access_log: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.reader = AccessLogReader(access_log)
        self.clock = clock

    def _sides(self, ctx: QueryContext, need_primary: bool) -> tuple[SideStats, SideStats]:
        recent = self.reader.since(self.clock() - ctx.interval_s)
        key = (lambda r: r.colour) if ctx.by == "colour" else (lambda r: r.variant)
        prim = _stats([r for r in recent if key(r) == ctx.primary])
        can = _stats([r for r in recent if key(r) == ctx.canary])
        if can.n < ctx.min_samples or (need_primary and prim.n < ctx.min_samples):
            seen = f"{prim.n} {ctx.primary} / {can.n} {ctx.canary}" if need_primary else f"{can.n} {ctx.canary}"
            raise NoValuesFound(f"{seen} requests in the last {ctx.interval_s:g}s (< {ctx.min_samples})")
        return prim, can

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        relative = check.kind in (MetricKind.P95_LATENCY_INCREASE_PCT, MetricKind.ERROR_RATE_DIFF_PP)
        if check.kind not in ROUTER_KINDS:
            raise ProviderError(f"check {check.name!r}: kind {check.kind.value} is not computed from the router log "
                                f"(PromQL needs a Prometheus: --prometheus-url)")
        prim, can = self._sides(ctx, relative)
        how = f"router access log, last {ctx.interval_s:g}s, n={prim.n}/{can.n} ({ctx.by})"
        if check.kind is MetricKind.P95_LATENCY_INCREASE_PCT:
            if prim.p95_ms is None or can.p95_ms is None or prim.p95_ms <= 0:
                raise NoValuesFound(f"no successful request (or a 0 ms p95) on one side: {prim} / {can}")
            increase = relative_increase_pct(can.p95_ms, prim.p95_ms)
            return increase, f"{how}; p95 {can.p95_ms:.1f} ms vs {prim.p95_ms:.1f} ms"
        if check.kind is MetricKind.ERROR_RATE_DIFF_PP:
            diff = 100.0 * (can.error_rate - prim.error_rate)
            return diff, f"{how}; errors {can.error_rate:.3%} vs {prim.error_rate:.3%}"
        if check.kind is MetricKind.P95_LATENCY_MS:
            if can.p95_ms is None:
                return math.inf, f"{how}; no successful request of {ctx.canary}"
            return can.p95_ms, f"{how}; p95 of {ctx.canary}"
        return 100.0 * can.error_rate, f"{how}; {can.errors} errors of {can.n}"


class ShadowLogProvider:
    """Computes the shadow checks from the comparator's ``shadow.jsonl`` over the last interval."""

    def __init__(self, shadow_log: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.reader = ShadowLogReader(shadow_log)
        self.clock = clock

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        if check.kind not in SHADOW_KINDS:
            raise ProviderError(f"check {check.name!r}: kind {check.kind.value} is not computed from shadow traffic")
        recent = [r for r in self.reader.since(self.clock() - ctx.interval_s) if r.candidate == ctx.canary]
        judged = [r for r in recent if r.outcome in (Outcome.COMPARED, Outcome.CANDIDATE_ERROR)]
        if len(judged) < ctx.min_samples:
            raise NoValuesFound(f"{len(judged)} mirrored requests judged in the last {ctx.interval_s:g}s "
                                f"(< {ctx.min_samples}); is mirroring on and traffic flowing?")
        how = f"shadow comparator, last {ctx.interval_s:g}s, n={len(judged)}"
        compared = [r for r in judged if r.outcome == Outcome.COMPARED]
        if check.kind is MetricKind.SHADOW_ERROR_RATE_PCT:
            return 100.0 * (len(judged) - len(compared)) / len(judged), f"{how}; candidate errors"
        if check.kind is MetricKind.OUTPUT_AGREEMENT:
            return self._agreement(compared, how)
        timed = [r for r in compared if r.primary_ms is not None and r.candidate_ms is not None]
        no_errors = np.zeros(len(timed), dtype=bool)
        prim = side_stats(np.array([r.primary_ms for r in timed]) / 1e3, no_errors)
        can = side_stats(np.array([r.candidate_ms for r in timed]) / 1e3, no_errors)
        if prim.p95_ms is None or can.p95_ms is None or prim.p95_ms <= 0:
            raise NoValuesFound(f"{how}; no compared request with latencies")
        return relative_increase_pct(can.p95_ms, prim.p95_ms), f"{how}; p95 {can.p95_ms:.1f} ms vs {prim.p95_ms:.1f} ms"

    @staticmethod
    def _agreement(compared: list[ShadowRecord], how: str) -> tuple[float, str]:
        if not compared:
            return 0.0, f"{how}; no mirrored request answered by the candidate"
        classifier = [r for r in compared if r.argmax_agree is not None]
        if classifier:
            value = float(np.mean([r.argmax_agree for r in classifier]))
            return value, f"{how}; argmax agreement over {len(classifier)} (classifier)"
        cos = np.array([r.cosine for r in compared if r.cosine is not None])
        return float(cos.mean()), f"{how}; cosine mean {cos.mean():.5f}, min {cos.min():.5f} (embedding)"


class LogProvider:
    """The router log for router checks, the shadow log for shadow checks (one provider for the scheduler)."""

    def __init__(self, access_log: str | Path, shadow_log: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.access = AccessLogProvider(access_log, clock)
        self.shadow = ShadowLogProvider(shadow_log, clock)

    def measure(self, check: MetricCheck, ctx: QueryContext) -> tuple[float, str]:
        if check.kind in SHADOW_KINDS:
            return self.shadow.measure(check, ctx)
        return self.access.measure(check, ctx)
