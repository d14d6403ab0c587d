"""The coordinator's side: merge worker messages into per-interval rows and per-model totals (exactly)."""

from __future__ import annotations

from dataclasses import dataclass, field

from icd.load.histogram import LatencyHistogram
from icd.load.stats import Counters, FinalMessage, IntervalMessage

SERIES_PERCENTILES = (50.0, 95.0, 99.0)


@dataclass(frozen=True)
class IntervalRow:
    """One model's completions in one interval (``t_s`` = interval end, seconds since the run started).

    Latencies are of requests completed in the interval; ``sent_rps`` counts sends made in it.
    """

    model: str
    index: int
    t_s: float
    span_s: float
    warmup: bool
    target_rate: float | None
    sent: int
    ok: int
    errors: int
    late: int
    sent_rps: float
    ok_rps: float
    error_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    hist: LatencyHistogram | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "hist")}


@dataclass
class _Pending:
    counters: dict[str, Counters] = field(default_factory=dict)
    hists: dict[str, LatencyHistogram] = field(default_factory=dict)
    rates: dict[str, float | None] = field(default_factory=dict)
    workers: int = 0
    span_s: float = 0.0


@dataclass
class ModelTotals:
    """A model's merged totals over all workers."""

    measured: Counters = field(default_factory=Counters)
    hist: LatencyHistogram = field(default_factory=LatencyHistogram)
    warmup: Counters = field(default_factory=Counters)
    unsent_at_end: int = 0
    unfinished_at_end: int = 0


class Aggregator:
    """Collects messages of ``n_workers`` workers; an interval row is complete once every worker sent it."""

    def __init__(self, models: list[str], n_workers: int, interval_s: float, warmup_s: float) -> None:
        self.models = models
        self.n_workers = n_workers
        self.interval_s = interval_s
        self.warmup_s = warmup_s
        self.series: dict[str, list[IntervalRow]] = {m: [] for m in models}
        self.totals: dict[str, ModelTotals] = {m: ModelTotals() for m in models}
        self.finals = 0
        self.measured_start: float | None = None
        self.ended: float | None = None
        self._pending: dict[int, _Pending] = {}

    def add_interval(self, msg: IntervalMessage) -> list[IntervalRow]:
        """Merge one worker's interval; return the rows this completes (possibly none)."""
        pend = self._pending.setdefault(msg.index, _Pending())
        for name, part in msg.models.items():
            pend.counters.setdefault(name, Counters()).merge(part.counters)
            hist = LatencyHistogram.decode(part.hist)
            if name in pend.hists:
                pend.hists[name].merge(hist)
            else:
                pend.hists[name] = hist
            if part.target_rate is not None:
                pend.rates[name] = part.target_rate
        pend.workers += 1
        pend.span_s = max(pend.span_s, msg.span_s)
        if pend.workers >= self.n_workers:
            return self._complete(msg.index)
        return []

    def add_final(self, msg: FinalMessage) -> None:
        for name, part in msg.models.items():
            tot = self.totals[name]
            tot.measured.merge(part.measured)
            tot.hist.merge(LatencyHistogram.decode(part.hist))
            tot.warmup.merge(part.warmup)
            tot.unsent_at_end += part.unsent_at_end
            tot.unfinished_at_end += part.unfinished_at_end
        self.finals += 1
        self.measured_start = msg.measured_start if self.measured_start is None else min(self.measured_start, msg.measured_start)
        self.ended = msg.ended if self.ended is None else max(self.ended, msg.ended)

    def flush(self) -> list[IntervalRow]:
        """Complete every interval still waiting (workers that stopped early), in order."""
        rows: list[IntervalRow] = []
        for index in sorted(self._pending):
            rows.extend(self._complete(index))
        return rows

    @property
    def measured_duration_s(self) -> float:
        if self.measured_start is None or self.ended is None:
            return 0.0
        return max(0.0, self.ended - self.measured_start)

    def _complete(self, index: int) -> list[IntervalRow]:
        pend = self._pending.pop(index)
        rows = []
        span = pend.span_s if pend.span_s > 0 else self.interval_s
        t_end = index * self.interval_s + span
        for name in self.models:
            c = pend.counters.get(name, Counters())
            hist = pend.hists.get(name, LatencyHistogram())
            pct = hist.percentiles_ms((*SERIES_PERCENTILES, 100.0))
            row = IntervalRow(
                model=name, index=index, t_s=round(t_end, 3), span_s=round(span, 3),
                warmup=(index + 1) * self.interval_s <= self.warmup_s + 1e-9, target_rate=pend.rates.get(name),
                sent=c.sent, ok=c.ok, errors=c.error_total, late=c.late,
                sent_rps=round(c.sent / span, 3), ok_rps=round(c.ok / span, 3), error_rps=round(c.error_total / span, 3),
                p50_ms=pct[0], p95_ms=pct[1], p99_ms=pct[2],
                max_ms=pct[3], hist=hist,
            )
            self.series[name].append(row)
            rows.append(row)
        return rows
