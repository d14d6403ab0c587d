"""A/B test through the router: split traffic request by request, compare within time blocks, write JSON + HTML.

1. **Pre-flight**: both models must answer ready on the router's active upstream and, once the split is applied,
   a request pinned to each must go through the router — a typo or an unloaded model is a one-line error, never
   a verdict (:mod:`icd.rollout.preflight`).
2. **Traffic**: open loop at ``rate`` req/s (Poisson arrivals, at most ``concurrency`` in flight; ``rate=None``:
   closed loop with ``concurrency`` workers). The router assigns each request at random (``split_clients`` over
   ``$request_id``); latency is measured at the client and attributed to the variant the router names.
3. **Comparison**, B relative to A: latency within time blocks (van Elteren test; block-bootstrap interval of the
   Hodges–Lehmann shift, :mod:`icd.rollout.blocked`), p95 (block bootstrap), error rate (Fisher's exact test),
   throughput share vs weight (binomial test), and output agreement on the same inputs (each input sent to both
   variants, pinned with the sticky header) in the figures that fit the task (:mod:`icd.rollout.agreement`).

Too little traffic, or blocks that disagree, give "inconclusive" with the reason — never better / worse.

Example:
    result = run_ab(router, ABSpec("bert_baseline", "bert_icd", duration_s=60, split=(50, 50)), payloads)
    write_ab_report(result, Path("results/ab_test_results.json"))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.load.routed import RoutedRecord, RoutedSpec, run_routed
from icd.rollout.agreement import Agreement, OutputTask, agreement, task_for_output
from icd.rollout.blocked import BlockedLatencyComparison, block_length, compare_latency_blocked
from icd.rollout.payloads import named_output
from icd.rollout.preflight import active_upstream, check_ready, check_routed
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.stats import DEFAULT_ALPHA, Verdict, compare_error_rates, compare_throughput_share

DEFAULT_RATE = 20.0
DEFAULT_CONCURRENCY = 8
DEFAULT_AGREEMENT_N = 32
LATENCY_ROW = "latency (blocked: van Elteren, HL shift)"
P95_ROW = "p95 latency (block bootstrap)"
ERROR_ROW = "error rate (Fisher exact)"
THROUGHPUT_ROW = "throughput (successful req/s)"
AGREEMENT_ROW = "output agreement (same inputs)"


@dataclass
class ABSpec:
    """An A/B run."""

    model_a: str
    model_b: str
    duration_s: float
    split: tuple[float, float] = (50.0, 50.0)
    concurrency: int = DEFAULT_CONCURRENCY
    agreement_n: int = DEFAULT_AGREEMENT_N
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    inputs: str = "text"
    rate: float | None = DEFAULT_RATE
    """Open-loop request rate (req/s); ``None``: closed loop with ``concurrency`` workers."""
    block_s: float | None = None
    """Time-block length; ``None``: :func:`icd.rollout.blocked.block_length` of the duration."""
    task: OutputTask | None = None
    """How output agreement is measured; ``None``: from the output's name (``logits`` → classifier)."""

    def __post_init__(self) -> None:
        if self.model_a == self.model_b:
            raise UserError(f"--model-a and --model-b are both {self.model_a!r}: an A/B needs two variants")
        if min(self.split) <= 0:
            raise UserError(f"--traffic-split {self.split[0]:g}:{self.split[1]:g}: both variants need traffic")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise UserError(f"--rate must be > 0 req/s (0 = closed loop), got {self.rate:g}")
        if self.rate is None and self.concurrency < 1:
            raise UserError(f"--concurrency must be >= 1 in a closed loop, got {self.concurrency}")
        if self.block_s is not None and self.block_s <= 0:
            raise UserError(f"--block must be > 0 seconds, got {self.block_s:g}")

    @property
    def blocks_of(self) -> float:
        return self.block_s if self.block_s is not None else block_length(self.duration_s)


@dataclass
class ABResult:
    spec: ABSpec
    router_url: str
    started: float
    records: list[RoutedRecord]
    agreement: Agreement
    comparisons: dict[str, Any] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    latency: BlockedLatencyComparison | None = None

    @property
    def conclusive(self) -> bool:
        """False when the latency verdict is inconclusive (too little traffic, or blocks that disagree)."""
        return self.latency is not None and self.latency.verdict is not Verdict.INCONCLUSIVE


def _fmt(x: float | None, unit: str = "") -> str:
    return "not measured" if x is None or x != x else f"{x:.4g}{unit}"


def measure_agreement(router: NginxRouter, spec: ABSpec, payloads: list[dict[str, Any]]) -> Agreement:
    """Send the same inputs to both variants (pinned by the sticky header) and compare their outputs."""
    header = router.spec.sticky_header
    url = f"{router.url}/v2/models/{router.spec.public_model}/infer"
    rows: dict[str, list[np.ndarray]] = {spec.model_a: [], spec.model_b: []}
    failures, name = 0, None
    with httpx.Client(timeout=60, trust_env=False) as client:
        for body in payloads[: spec.agreement_n]:
            pair = {}
            for model in (spec.model_a, spec.model_b):
                resp = client.post(url, json=body, headers={header: model})
                if resp.status_code == 200 and resp.headers.get("X-ICD-Variant") == model:
                    name, pair[model] = named_output(resp.json())
            if len(pair) == 2 and pair[spec.model_a].shape == pair[spec.model_b].shape:
                for model, vec in pair.items():
                    rows[model].append(vec)
            else:
                failures += 1
    task = spec.task or task_for_output(name)
    if not rows[spec.model_a]:
        return Agreement(task, 0, failed_pairs=failures)
    return agreement(task, np.stack(rows[spec.model_a]), np.stack(rows[spec.model_b]), failures)


def run_ab(router: NginxRouter, spec: ABSpec, payloads: list[dict[str, Any]]) -> ABResult:
    """Check, route ``spec.split`` through ``router`` for ``duration_s`` under load, restore, then compare.

    Raises:
        UserError: a model is not READY on the router's upstream, or the router does not route to it — before
            any traffic is sent (the router's previous routing is restored).
    """
    live = router.spec
    check_ready(active_upstream(router), [spec.model_a, spec.model_b],
                where=f"the router's active upstream ({live.active})")
    previous = dict(live.weights)
    router.set_weights({spec.model_a: spec.split[0], spec.model_b: spec.split[1]})
    started = time.time()
    try:
        check_routed(router, [spec.model_a, spec.model_b])
        url = f"{router.url}/v2/models/{router.spec.public_model}/infer"
        records = run_routed(RoutedSpec(url, lambda i: payloads[i % len(payloads)], concurrency=spec.concurrency,
                                        duration_s=spec.duration_s, rate=spec.rate, seed=spec.seed))
        agreement_result = measure_agreement(router, spec, payloads)
    finally:
        router.set_weights(previous)
    result = ABResult(spec, router.url, started, records, agreement_result)
    compare(result)
    return result


def _latency_rows(lat: BlockedLatencyComparison) -> list[dict[str, Any]]:
    nm = Verdict.NOT_MEASURED.value
    measured = lat.shift_rel == lat.shift_rel  # NaN when too little traffic
    shift = (f"{lat.shift_rel:+.1%} [{lat.shift_rel_ci[0]:+.1%}, {lat.shift_rel_ci[1]:+.1%}], HL "
             f"{lat.shift_ms:+.3g} ms" if measured else nm)
    p95 = (f"{lat.p95_rel:+.1%} [{lat.p95_rel_ci[0]:+.1%}, {lat.p95_rel_ci[1]:+.1%}]"
           if lat.p95_rel is not None and lat.p95_rel_ci is not None else nm)
    return [
        {"metric": LATENCY_ROW, "a": _fmt(lat.median_a, " ms"), "b": _fmt(lat.median_b, " ms"),
         "difference (B-A)": shift, "p": _fmt(lat.p_value) if measured else "",
         "verdict": lat.verdict.value, "why": lat.reason},
        {"metric": P95_ROW, "a": _fmt(lat.p95_a, " ms"), "b": _fmt(lat.p95_b, " ms"), "difference (B-A)": p95,
         "p": "", "verdict": lat.p95_verdict.value, "why": lat.p95_reason},
    ]


def compare(result: ABResult) -> None:
    """Fill ``result.comparisons``, ``result.latency`` and the verdict table."""
    spec, recs = result.spec, result.records
    a, b = spec.model_a, spec.model_b
    by = {m: [r for r in recs if r.variant == m] for m in (a, b)}
    ok = [r for r in recs if r.ok and r.variant in (a, b)]
    lat = compare_latency_blocked([r.t for r in ok], [r.latency_ms for r in ok], [r.variant == b for r in ok],
                                  block_s=spec.blocks_of, alpha=spec.alpha, seed=spec.seed)
    result.latency = lat
    n_ok = {m: sum(r.ok for r in by[m]) for m in (a, b)}
    err = compare_error_rates(sum(not r.ok for r in by[a]), len(by[a]), sum(not r.ok for r in by[b]), len(by[b]),
                              alpha=spec.alpha)
    thr = compare_throughput_share(n_ok[a], n_ok[b], spec.split[0], spec.split[1], alpha=spec.alpha)
    dur = spec.duration_s
    lags = np.array([r.lag_ms for r in recs]) if recs else np.zeros(0)
    result.comparisons = {
        "latency_ms": lat.to_dict(),
        "error_rate": err.to_dict() if err else None,
        "throughput": {**(thr.to_dict() if thr else {}), "rps_a": n_ok[a] / dur, "rps_b": n_ok[b] / dur},
        "output_agreement": result.agreement.to_dict(),
        "unrouted_requests": sum(1 for r in recs if r.variant not in (a, b)),
        "generator": {"mode": "closed loop" if spec.rate is None else f"open loop {spec.rate:g} req/s",
                      "sends_late_over_50ms": int((lags > 50).sum()),
                      "max_lag_ms": float(lags.max()) if lags.size else 0.0},
    }
    nm = Verdict.NOT_MEASURED.value
    result.verdicts = [
        *_latency_rows(lat),
        {"metric": ERROR_ROW, "a": f"{err.rate_a:.3%}" if err else nm, "b": f"{err.rate_b:.3%}" if err else nm,
         "difference (B-A)": f"{err.diff:+.3%}" if err else nm, "p": _fmt(err.p_value if err else None),
         "verdict": err.verdict.value if err else nm, "why": f"{len(by[a])} A / {len(by[b])} B requests"},
        {"metric": THROUGHPUT_ROW, "a": f"{n_ok[a] / dur:.1f}", "b": f"{n_ok[b] / dur:.1f}",
         "difference (B-A)": f"share {thr.rate_b:.3f} vs weight {thr.rate_a:.3f}" if thr else nm,
         "p": _fmt(thr.p_value if thr else None), "verdict": thr.verdict.value if thr else nm,
         "why": "B's share of successful requests vs its weight (binomial)"},
        {"metric": AGREEMENT_ROW, "a": "reference", "b": result.agreement.text(),
         "difference (B-A)": result.agreement.task.value, "p": "", "verdict": "reported (no test)",
         "why": "each input sent to both variants"},
    ]


def verdict_table_text(rows: list[dict[str, Any]], columns: tuple[str, ...] = ("metric", "a", "b",
                       "difference (B-A)", "p", "verdict")) -> str:
    """The verdict table as aligned plain-text columns (what the CLI prints)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def conclusion_text(result: ABResult) -> str:
    """One line: the latency verdict and why (the host, too little traffic, or the models)."""
    lat = result.latency
    if lat is None:
        return "inconclusive: no comparison"
    return f"{lat.verdict.value}: {lat.reason}"


def result_json(result: ABResult) -> dict[str, Any]:
    spec = result.spec
    return {
        "model_a": spec.model_a, "model_b": spec.model_b, "traffic_split": list(spec.split),
        "duration_s": spec.duration_s, "concurrency": spec.concurrency, "rate_rps": spec.rate, "alpha": spec.alpha,
        "block_s": spec.blocks_of, "router": result.router_url, "started": result.started, "inputs": spec.inputs,
        "latency_measured_at": "client, through the nginx router",
        "requests": {m: sum(1 for r in result.records if r.variant == m) for m in (spec.model_a, spec.model_b)},
        "failed_requests": sum(not r.ok for r in result.records),
        "conclusive": result.conclusive, "conclusion": conclusion_text(result),
        "output_agreement": result.agreement.to_dict(),
        "verdicts": result.verdicts, "comparisons": result.comparisons,
    }


def write_ab_report(result: ABResult, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the HTML report next to it (same stem, ``.html``); returns both paths."""
    from icd.report.html import Report, new_figure

    data = result_json(result)
    write_json_atomic(path, data)
    spec = result.spec
    mode = "closed loop" if spec.rate is None else f"{spec.rate:g} req/s"
    report = Report(f"A/B test: {spec.model_b} vs {spec.model_a}",
                    subtitle=f"{spec.duration_s:g}s, split {spec.split[0]:g}:{spec.split[1]:g}, {mode}, blocks of "
                             f"{spec.blocks_of:g}s, through {result.router_url}")
    report.add_table("Verdicts (B relative to A)", result.verdicts)
    lat = {m: np.array([r.latency_ms for r in result.records if r.ok and r.variant == m])
           for m in (spec.model_a, spec.model_b)}
    fig, ax = new_figure()
    for m, v in lat.items():
        if v.size:
            ax.plot(np.sort(v), np.linspace(0, 1, v.size), label=f"{m} (n={v.size})")
    ax.set_xlabel("latency (ms, client-measured)"), ax.set_ylabel("ECDF"), ax.legend()
    report.add_figure("Latency distributions (ECDF)", fig)
    fig, ax = new_figure()
    for m in (spec.model_a, spec.model_b):
        pts = [(r.t - result.started, r.latency_ms) for r in result.records if r.ok and r.variant == m]
        if pts:
            t, y = zip(*pts, strict=True)
            ax.scatter(t, y, s=3, alpha=0.4, label=m)
    if result.latency is not None and result.latency.per_block:
        ax2 = ax.twinx()
        blocks = result.latency.per_block
        ax2.step([blk["start"] - result.started for blk in blocks], [100 * blk["shift_rel"] for blk in blocks],
                 where="post", color="black", alpha=0.6, label="per-block shift B vs A (%)")
        ax2.set_ylabel("per-block shift (%)"), ax2.legend(loc="upper right")
    ax.set_xlabel("time (s)"), ax.set_ylabel("latency (ms)"), ax.legend(loc="upper left")
    report.add_figure("Latency over time and the per-block shift", fig)
    report.add_json("Comparisons (raw)", data["comparisons"])
    html_path = path.with_suffix(".html")
    report.write(html_path)
    return path, html_path


def run_ab_at_endpoint(endpoint: str, spec: ABSpec, payloads: list[dict[str, Any]], report: Path,
                       public_model: str = "bert") -> tuple[ABResult, Path, Path]:
    """A/B through a temporary router in front of the Triton at ``endpoint`` (e.g. for ``make demo``).

    Returns the result and the JSON / HTML report paths; the router is stopped (and waited for) before returning.
    """
    from icd.io.ports import free_port
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import endpoint_addr, ephemeral_router

    addr = endpoint_addr(endpoint)
    check_ready(addr, [spec.model_a, spec.model_b], where="Triton")
    router_spec = RouterSpec(free_port(), public_model, {spec.model_a: 100.0, spec.model_b: 0.0}, {"blue": [addr]},
                             "blue")
    with ephemeral_router(router_spec) as router:
        result = run_ab(router, spec, payloads)
    json_path, html_path = write_ab_report(result, report)
    return result, json_path, html_path
