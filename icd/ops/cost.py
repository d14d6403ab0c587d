"""Cost optimisation sweep (``icd optimize-instances``), in the spirit of Triton Model Analyzer.

For each (instance count, max batch size, dynamic-batching delay) the model is reloaded on the live server with
that configuration, closed-loop load is driven with the icd load generator, and throughput and p95 are
measured. A configuration *meets the targets* when its measured p95 ≤ the target and it had no errors.

Cost is a projection, said so in the report: the throughput measured *on this host* is priced at the cost
model's instance price, planning to run at ``target_utilization`` of the measured capacity:
``projected cost per 1M requests = price_per_hour / (throughput × utilization × 3600) × 1e6``. With
``demand_rps``, the fleet size is ``ceil(demand / (throughput × utilization))``. The recommendation is the
cheapest configuration meeting the targets. The report is checkpointed after each measurement.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from icd.errors import UserError
from icd.io.atomic import write_json_atomic
from icd.ops.cost_model import CostModel, InstancePrice, load_cost_model
from icd.ops.model_reload import BatchingConfig, apply_batching, get_config, load_with_config
from icd.report.html import new_figure


@dataclass
class SweepSettings:
    endpoint: str
    model: str
    target_p95_ms: float
    target_utilization: float
    cost_model: str
    instance_type: str | None = None
    instance_counts: list[int] = field(default_factory=lambda: [1, 2])
    max_batch_sizes: list[int] = field(default_factory=lambda: [8, 32])
    queue_delays_us: list[int] = field(default_factory=lambda: [0, 5000])
    duration_s: float = 10.0
    warmup_s: float = 1.0
    concurrency: int = 8
    input_shape: int = 128
    demand_rps: float | None = None

    def validate(self) -> None:
        """Raise UserError naming the flag and value of the first bad setting."""
        checks = [("--target-latency", self.target_p95_ms, self.target_p95_ms > 0),
                  ("--target-utilization", self.target_utilization * 100, 0 < self.target_utilization <= 1),
                  ("--duration", self.duration_s, self.duration_s > 0),
                  ("--concurrency", self.concurrency, self.concurrency >= 1),
                  ("--instance-counts", self.instance_counts, min(self.instance_counts) >= 1),
                  ("--max-batch-sizes", self.max_batch_sizes, min(self.max_batch_sizes) >= 1),
                  ("--queue-delays-us", self.queue_delays_us, min(self.queue_delays_us) >= 0),
                  ("--demand-rps", self.demand_rps, self.demand_rps is None or self.demand_rps > 0)]
        for flag, value, ok in checks:
            if not ok:
                raise UserError(f"{flag}: invalid value {value!r}")

    def grid(self) -> list[BatchingConfig]:
        return [BatchingConfig(c, b, d) for c, b, d in
                itertools.product(self.instance_counts, self.max_batch_sizes, self.queue_delays_us)]


def measure(settings: SweepSettings) -> dict[str, Any]:
    """One closed-loop load run against the current configuration; the load generator's summary."""
    from icd.load.runner import run_load
    from icd.load.settings import LoadSettings
    from icd.load.target import Target

    load = LoadSettings(duration_s=settings.duration_s, warmup_s=settings.warmup_s,
                        concurrency=settings.concurrency, input_shape=settings.input_shape, inputs="random",
                        workers=0)
    summary = run_load(load, Target(settings.endpoint, (settings.model,))).model_summary(settings.model)
    summary.pop("timeseries", None)
    return summary


def cost_row(point: BatchingConfig, summary: dict[str, Any], price: InstancePrice,
             settings: SweepSettings) -> dict[str, Any]:
    """The candidate's measured figures and its projected cost."""
    throughput = float(summary.get("throughput_rps") or 0.0)
    p95 = summary.get("latency_ms", {}).get("p95")
    errors = int(summary.get("errors", {}).get("total", 0))
    meets = p95 is not None and p95 <= settings.target_p95_ms and errors == 0 and throughput > 0
    planned = throughput * settings.target_utilization
    per_million = round(price.price_per_hour / (planned * 3600.0) * 1e6, 4) if planned > 0 else None
    row: dict[str, Any] = {
        "config_id": point.config_id, "instance_count": point.instance_count,
        "max_batch_size": point.max_batch_size, "queue_delay_us": point.queue_delay_us,
        "throughput_rps": throughput, "p95_ms": p95, "p50_ms": summary.get("latency_ms", {}).get("p50"),
        "errors": errors, "requests": summary.get("requests"), "meets_latency": meets,
        "projected_cost_per_million_requests": per_million,
    }
    if settings.demand_rps is not None and planned > 0:
        servers = math.ceil(settings.demand_rps / planned)
        row["servers_for_demand"] = servers
        row["projected_fleet_cost_per_hour"] = round(servers * price.price_per_hour, 4)
    return row


def pareto_front(rows: list[dict[str, Any]]) -> list[str]:
    """config_ids not dominated in (higher throughput, lower p95), error-free rows only."""
    ok = [r for r in rows if r["p95_ms"] is not None and r["errors"] == 0]
    front = []
    for r in ok:
        dominated = any(o is not r and o["throughput_rps"] >= r["throughput_rps"] and o["p95_ms"] <= r["p95_ms"]
                        and (o["throughput_rps"] > r["throughput_rps"] or o["p95_ms"] < r["p95_ms"]) for o in ok)
        if not dominated:
            front.append(r["config_id"])
    return front


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Cheapest row meeting the targets (ties: lower p95)."""
    ok = [r for r in rows if r["meets_latency"] and r["projected_cost_per_million_requests"] is not None]
    return min(ok, key=lambda r: (r["projected_cost_per_million_requests"], r["p95_ms"])) if ok else None


def plot_pareto(rows: list[dict[str, Any]], front: list[str], best: dict[str, Any] | None, target_ms: float,
                path: Path) -> Path:
    fig, ax = new_figure(7, 4.5)
    ax.scatter([r["throughput_rps"] for r in rows], [r["p95_ms"] or 0 for r in rows], color="grey", label="measured")
    pts = sorted((r for r in rows if r["config_id"] in front), key=lambda r: r["throughput_rps"])
    ax.plot([r["throughput_rps"] for r in pts], [r["p95_ms"] for r in pts], "o-", color="tab:blue", label="Pareto front")
    for r in rows:
        ax.annotate(r["config_id"], (r["throughput_rps"], r["p95_ms"] or 0), fontsize=6)
    ax.axhline(target_ms, color="tab:red", linestyle="--", label=f"p95 target {target_ms:g} ms")
    if best:
        ax.scatter([best["throughput_rps"]], [best["p95_ms"]], marker="*", s=200, color="gold", zorder=3,
                   label="recommended")
    ax.set_xlabel("measured throughput (requests/s)")
    ax.set_ylabel("measured p95 (ms)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _document(settings: SweepSettings, model: CostModel, model_path: Path, price: InstancePrice,
              rows: list[dict[str, Any]], started: str, complete: bool) -> dict[str, Any]:
    front = pareto_front(rows)
    best = recommend(rows) if complete else None
    return {
        "status": "complete" if complete else "running", "started": started,
        "endpoint": settings.endpoint, "model": settings.model,
        "targets": {"p95_ms": settings.target_p95_ms, "utilization": settings.target_utilization,
                    "demand_rps": settings.demand_rps},
        "measured_on": f"this host ({platform.machine()}, {platform.node()}): throughput and p95 measured with "
                       f"the icd load generator, closed loop, {settings.concurrency} clients, "
                       f"{settings.duration_s:g} s per configuration, random token ids x {settings.input_shape}",
        "cost_basis": {"cost_model": model.name, "file": str(model_path), "currency": model.currency,
                       "instance": price.model_dump(), "note": model.note,
                       "how": "projection: throughput measured on this host, priced at the instance's list price "
                              "per hour, run at the target utilization; not a measurement on that instance"},
        "candidates": rows, "pareto_front": front, "recommendation": best,
    }


def optimize(settings: SweepSettings, report: Path) -> dict[str, Any]:
    """Run the sweep, write ``report`` (checkpointed) and ``<report>.png``; return the report document."""
    settings.validate()
    model, model_path = load_cost_model(settings.cost_model)
    price = model.instance(settings.instance_type)
    if not Path(report).parent.exists():
        raise UserError(f"--report {report}: parent folder does not exist")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        base = get_config(client, settings.endpoint, settings.model)
        try:
            for point in settings.grid():
                load_with_config(client, settings.endpoint, settings.model, apply_batching(base, point))
                rows.append(cost_row(point, measure(settings), price, settings))
                write_json_atomic(report, _document(settings, model, model_path, price, rows, started, False))
        finally:  # a load without config keeps the last override: reload the configuration found at the start
            load_with_config(client, settings.endpoint, settings.model, base)
    doc = _document(settings, model, model_path, price, rows, started, True)
    doc["plot"] = str(plot_pareto(rows, doc["pareto_front"], doc["recommendation"], settings.target_p95_ms,
                                  Path(report).with_suffix(".png")))
    write_json_atomic(report, doc)
    return doc
