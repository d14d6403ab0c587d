"""A/B test through the router: split traffic between two variants, compare them, write JSON + HTML.

Compared, B relative to A: latency distribution (Mann–Whitney U, Hodges–Lehmann shift and CI), p95 (bootstrap
CI), error rate (Fisher's exact test), throughput (successful requests per second; B's share vs its weight,
binomial test), and output agreement on the same inputs (each input sent to both variants, pinned with the
sticky header: argmax agreement and cosine of the outputs). Latencies are client-measured through the router.

Example:
    result = run_ab(router, ABSpec("bert_baseline", "bert_icd", duration_s=60, split=(50, 50)), payloads)
    write_ab_report(result, Path("results/ab_test_results.json"))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from icd.io.atomic import write_json_atomic
from icd.rollout.payloads import output_vector
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.stats import (
    DEFAULT_ALPHA,
    Verdict,
    bootstrap_quantile_diff,
    compare_error_rates,
    compare_latency,
    compare_throughput_share,
    cosine_rows,
)
from icd.rollout.traffic import RequestRecord, TrafficSpec, run_traffic

DEFAULT_CONCURRENCY = 4
DEFAULT_AGREEMENT_N = 32


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


@dataclass
class ABResult:
    spec: ABSpec
    router_url: str
    started: float
    records: list[RequestRecord]
    agreement: dict[str, Any]
    comparisons: dict[str, Any] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def _fmt(x: float | None, unit: str = "") -> str:
    return "not measured" if x is None else f"{x:.4g}{unit}"


def measure_agreement(router: NginxRouter, spec: ABSpec, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Send the same inputs to both variants (pinned by the sticky header); argmax agreement and cosine."""
    header = router.spec.sticky_header
    url = f"{router.url}/v2/models/{router.spec.public_model}/infer"
    outs: dict[str, list[np.ndarray]] = {spec.model_a: [], spec.model_b: []}
    failures = 0
    with httpx.Client(timeout=60) as client:
        for body in payloads[: spec.agreement_n]:
            pair = {}
            for model in (spec.model_a, spec.model_b):
                resp = client.post(url, json=body, headers={header: model})
                if resp.status_code == 200:
                    pair[model] = output_vector(resp.json())
            if len(pair) == 2:
                for model, vec in pair.items():
                    outs[model].append(vec)
            else:
                failures += 1
    n = len(outs[spec.model_a])
    if n == 0:
        return {"n": 0, "failed_pairs": failures, "argmax_agreement": None, "cosine_mean": None, "cosine_min": None}
    a, b = np.stack(outs[spec.model_a]), np.stack(outs[spec.model_b])
    cos = cosine_rows(a, b)
    return {"n": n, "failed_pairs": failures, "argmax_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "inputs": spec.inputs}


def run_ab(router: NginxRouter, spec: ABSpec, payloads: list[dict[str, Any]]) -> ABResult:
    """Route ``spec.split`` through ``router`` for ``duration_s`` under closed-loop load, then compare."""
    previous = dict(router.spec.weights)
    router.set_weights({spec.model_a: spec.split[0], spec.model_b: spec.split[1]})
    started = time.time()
    try:
        url = f"{router.url}/v2/models/{router.spec.public_model}/infer"
        records = run_traffic(TrafficSpec(url, lambda i: payloads[i % len(payloads)],
                                          concurrency=spec.concurrency, duration_s=spec.duration_s))
        agreement = measure_agreement(router, spec, payloads)
    finally:
        router.set_weights(previous)
    result = ABResult(spec, router.url, started, records, agreement)
    compare(result)
    return result


def compare(result: ABResult) -> None:
    """Fill ``result.comparisons`` and the verdict table."""
    spec, recs = result.spec, result.records
    by = {m: [r for r in recs if r.variant == m] for m in (spec.model_a, spec.model_b)}
    ok = {m: np.array([r.latency_ms for r in rs if r.ok]) for m, rs in by.items()}
    a, b = spec.model_a, spec.model_b
    lat = compare_latency(ok[a], ok[b], alpha=spec.alpha, seed=spec.seed)
    p95 = bootstrap_quantile_diff(ok[a], ok[b], 95.0, alpha=spec.alpha, seed=spec.seed)
    err = compare_error_rates(sum(not r.ok for r in by[a]), len(by[a]), sum(not r.ok for r in by[b]), len(by[b]),
                              alpha=spec.alpha)
    thr = compare_throughput_share(len(ok[a]), len(ok[b]), spec.split[0], spec.split[1], alpha=spec.alpha)
    dur = spec.duration_s
    result.comparisons = {
        "latency_ms": lat.to_dict() if lat else None,
        "p95_latency_ms": p95.to_dict() if p95 else None,
        "error_rate": err.to_dict() if err else None,
        "throughput": {**(thr.to_dict() if thr else {}), "rps_a": len(ok[a]) / dur, "rps_b": len(ok[b]) / dur},
        "output_agreement": result.agreement,
        "unrouted_requests": sum(1 for r in recs if r.variant not in (a, b)),
    }
    nm = Verdict.NOT_MEASURED.value
    result.verdicts = [
        {"metric": "latency (median, Mann-Whitney U)", "a": _fmt(lat.median_a if lat else None, " ms"),
         "b": _fmt(lat.median_b if lat else None, " ms"),
         "difference (B-A)": f"HL {lat.hl_shift:+.3g} ms [{lat.hl_ci[0]:+.3g}, {lat.hl_ci[1]:+.3g}]" if lat else nm,
         "p": _fmt(lat.p_value if lat else None), "verdict": lat.verdict.value if lat else nm},
        {"metric": "p95 latency (bootstrap)", "a": _fmt(p95.value_a if p95 else None, " ms"),
         "b": _fmt(p95.value_b if p95 else None, " ms"),
         "difference (B-A)": f"{p95.diff:+.3g} ms [{p95.ci[0]:+.3g}, {p95.ci[1]:+.3g}]" if p95 else nm,
         "p": "", "verdict": p95.verdict.value if p95 else nm},
        {"metric": "error rate (Fisher exact)", "a": f"{err.rate_a:.3%}" if err else nm,
         "b": f"{err.rate_b:.3%}" if err else nm, "difference (B-A)": f"{err.diff:+.3%}" if err else nm,
         "p": _fmt(err.p_value if err else None), "verdict": err.verdict.value if err else nm},
        {"metric": "throughput (successful req/s)", "a": f"{len(ok[a]) / dur:.1f}", "b": f"{len(ok[b]) / dur:.1f}",
         "difference (B-A)": f"share {thr.rate_b:.3f} vs weight {thr.rate_a:.3f}" if thr else nm,
         "p": _fmt(thr.p_value if thr else None), "verdict": thr.verdict.value if thr else nm},
        {"metric": "output agreement (same inputs)",
         "a": "reference", "b": f"argmax {_fmt(result.agreement.get('argmax_agreement'))}, "
                                f"cosine mean {_fmt(result.agreement.get('cosine_mean'))}",
         "difference (B-A)": f"n={result.agreement.get('n')}", "p": "", "verdict": "reported (no test)"},
    ]


def verdict_table_text(rows: list[dict[str, Any]]) -> str:
    """The verdict table as aligned plain-text columns (what the CLI prints)."""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def result_json(result: ABResult) -> dict[str, Any]:
    spec = result.spec
    return {
        "model_a": spec.model_a, "model_b": spec.model_b, "traffic_split": list(spec.split),
        "duration_s": spec.duration_s, "concurrency": spec.concurrency, "alpha": spec.alpha,
        "router": result.router_url, "started": result.started, "inputs": spec.inputs,
        "latency_measured_at": "client, through the nginx router",
        "requests": {m: sum(1 for r in result.records if r.variant == m) for m in (spec.model_a, spec.model_b)},
        "failed_requests": sum(not r.ok for r in result.records),
        "verdicts": result.verdicts, "comparisons": result.comparisons,
    }


def write_ab_report(result: ABResult, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and the HTML report next to it (same stem, ``.html``); returns both paths."""
    from icd.report.html import Report, new_figure

    data = result_json(result)
    write_json_atomic(path, data)
    spec = result.spec
    report = Report(f"A/B test: {spec.model_b} vs {spec.model_a}",
                    subtitle=f"{spec.duration_s:g}s, split {spec.split[0]:g}:{spec.split[1]:g}, "
                             f"concurrency {spec.concurrency}, through {result.router_url}")
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
    ax.set_xlabel("time (s)"), ax.set_ylabel("latency (ms)"), ax.legend()
    report.add_figure("Latency over time", fig)
    report.add_json("Comparisons (raw)", data["comparisons"])
    html_path = path.with_suffix(".html")
    report.write(html_path)
    return path, html_path


def run_ab_at_endpoint(endpoint: str, spec: ABSpec, payloads: list[dict[str, Any]], report: Path,
                       public_model: str = "bert") -> tuple[ABResult, Path, Path]:
    """A/B through a temporary router in front of the Triton at ``endpoint`` (e.g. for ``make demo``).

    Returns the result and the JSON / HTML report paths; the router is stopped (and waited for) before returning.
    """
    import socket

    from icd.defaults import LOOPBACK
    from icd.rollout.router_config import RouterSpec
    from icd.rollout.router_ops import endpoint_addr, ephemeral_router

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    router_spec = RouterSpec(port, public_model, {spec.model_a: 100.0, spec.model_b: 0.0},
                             {"blue": [endpoint_addr(endpoint)]}, "blue")
    with ephemeral_router(router_spec) as router:
        result = run_ab(router, spec, payloads)
    json_path, html_path = write_ab_report(result, report)
    return result, json_path, html_path
