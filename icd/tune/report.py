"""Reports of a search, rendered from its checkpoint: JSON, HTML with the Pareto plot, and the winner's config.pbtxt.

Everything here reads the checkpoint only, so ``icd tune-report <checkpoint>`` re-renders a finished, stopped or
interrupted run offline. Schema of the JSON (``icd.tune.report/1``): see docs/scaling.md ("icd tune").

Each configuration's row shows its *best* point (highest throughput meeting the SLO) or, when none meets it, its
*closest* point (lowest latency at the SLO percentile); a level measured twice (the winner's repeat) shows its
measurements combined (mean throughput, worst latency) and ``measurements_at_level``. The recommendation is the
best row under the objective; when no row meets the SLO the report says so and names the closest configuration
instead.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

from icd.io.atomic import write_bytes_atomic, write_json_atomic
from icd.report.html import Report, new_figure
from icd.tune import model_config
from icd.tune.checkpoint import Checkpoint
from icd.tune.measurement import ConfigResult, LoadPoint, PointStatus, Slo
from icd.tune.objective import COST, Objective
from icd.tune.settings import RunPaths, TuneSettings
from icd.tune.variants import Variant

REPORT_SCHEMA = "icd.tune.report/1"


def results_of(checkpoint: Checkpoint) -> list[ConfigResult]:
    """The checkpoint's points grouped per configuration, in first-measured order."""
    by_id: dict[str, ConfigResult] = {}
    for point in checkpoint.points:
        by_id.setdefault(point.config_id, ConfigResult(point.candidate)).points.append(point)
    return list(by_id.values())


def _row(result: ConfigResult, objective: Objective, demand_rps: float | None) -> dict[str, Any]:
    slo = objective.slo
    best = result.best(slo)
    shown = best or result.closest(slo)
    failure = result.failure
    status = ("meets_slo" if best is not None else failure.status.value if failure is not None and shown is None
              else "misses_slo")
    row: dict[str, Any] = {"config_id": result.config_id, **result.candidate.to_dict(), "status": status,
                           "points_measured": sum(1 for p in result.points if p.concurrency is not None)}
    if shown is not None:
        row.update({"concurrency": shown.concurrency,
                    "measurements_at_level": result.times_measured(shown.concurrency),
                    "throughput_rps": shown.throughput,
                    "p50_ms": shown.value("served_latency_p50_ms"), "p95_ms": shown.value("served_latency_p95_ms"),
                    "p99_ms": shown.value("served_latency_p99_ms"), "requests": shown.requests,
                    "errors": shown.errors, "records": [r.to_json() for r in shown.records.values()]})
        basis = objective.cost
        if basis is not None:
            cost = basis.per_million(shown.candidate, shown.throughput)
            row[COST] = None if cost is None else round(cost, 6)
            row["cores_occupied"] = basis.cores(shown.candidate)
            if demand_rps is not None:
                row["servers_for_demand"] = basis.servers_for(demand_rps, shown.throughput)
    if failure is not None:
        row["detail"] = failure.detail
    return row


def pareto_front(rows: list[dict[str, Any]], latency_key: str) -> list[str]:
    """config_ids of measured, error-free rows not dominated in (higher throughput, lower latency)."""
    ok = [r for r in rows if r.get(latency_key) is not None and r.get("errors") == 0]
    front = []
    for r in ok:
        dominated = any(o is not r and o["throughput_rps"] >= r["throughput_rps"] and o[latency_key] <= r[latency_key]
                        and (o["throughput_rps"] > r["throughput_rps"] or o[latency_key] < r[latency_key]) for o in ok)
        if not dominated:
            front.append(r["config_id"])
    return front


def _closest(results: list[ConfigResult], slo: Slo) -> LoadPoint | None:
    points = [p for p in (r.closest(slo) for r in results) if p is not None]
    return min(points, key=lambda p: (p.errors > 0, p.value(slo.tag), -p.throughput)) if points else None


def _verdict(winner: dict[str, Any] | None, closest: LoadPoint | None, objective: Objective, n: int) -> str:
    slo = objective.slo
    if winner is not None:
        text = (f"recommended {winner['config_id']}: {winner['throughput_rps']:.1f} req/s at "
                f"p{slo.percentile} {winner[f'p{slo.percentile}_ms']:.1f} ms (concurrency {winner['concurrency']})")
        if winner.get("measurements_at_level", 1) > 1:
            text += (f", held the SLO on a repeat measurement (of {winner['measurements_at_level']}: "
                     "throughput the mean, latency the worst)")
        if winner.get("runtime"):
            text += f", version {winner['version']}: {winner['runtime']} {winner['precision']}"
            if winner.get("cos_mean_fp32") is not None:
                text += (f" (its export verified cos {winner['cos_mean_fp32']:.5f} / NN "
                         f"{winner['nn_agreement_fp32']} against fp32)")
        if COST in winner and winner[COST] is not None:
            text += f", projected {winner[COST]:.4g} {objective.cost.model.currency} per 1M requests"  # type: ignore[union-attr]
        return text
    text = f"no configuration meets {slo.describe()} ({n} configuration(s) measured)"
    if closest is not None:
        latency = closest.value(slo.tag)
        text += (f"; closest: {closest.config_id} with p{slo.percentile} {latency:.1f} ms at "
                 f"{closest.throughput:.1f} req/s (concurrency {closest.concurrency})")
    return text


def summarize(checkpoint: Checkpoint, settings: TuneSettings, paths: RunPaths) -> dict[str, Any]:
    """The report document (see module docstring)."""
    objective = settings.build_objective()
    results = results_of(checkpoint)
    rows = [_row(r, objective, settings.demand_rps) for r in results]
    for row in rows:  # a version searched: say what it runs
        row.update({k: v for k, v in checkpoint.variants.get(str(row["version"]), {}).items() if k != "version"})
    ranked = objective.rank(results)
    winner = next((row for row in rows if ranked and row["config_id"] == ranked[0].config_id), None)
    closest = None if winner is not None else _closest(results, objective.slo)
    enumeration = settings.space.enumerate()
    load = settings.load
    host = dict(checkpoint.host)
    with contextlib.suppress(OSError):
        host["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return {
        "schema": REPORT_SCHEMA, "status": checkpoint.status.value, "stop_reason": checkpoint.stop_reason,
        "model": settings.model, "objective": objective.describe(), "objective_tag": objective.tag,
        "slo": {"latency_ms": objective.slo.latency_ms, "percentile": objective.slo.percentile},
        "mode": settings.mode.value, "launch": checkpoint.launch, "kind": checkpoint.kind, "notes": checkpoint.notes,
        "host": host, "started": checkpoint.started, "updated": checkpoint.updated,
        "measurements": checkpoint.measured, "configurations_measured": len(results),
        "space": {"possible_configurations": len(enumeration.candidates), "skipped": enumeration.skipped_lines(),
                  **settings.space.model_dump()},
        "measured_on": (f"this host ({host.get('cpu')}, {host.get('cores')} cores): "
                        + load.describe(0).replace("0 clients", "clients per the concurrency sweep")),
        "recommendation": winner,
        "closest": None if closest is None else {"config_id": closest.config_id, "concurrency": closest.concurrency,
                                                 "throughput_rps": closest.throughput,
                                                 objective.slo.tag: closest.value(objective.slo.tag)},
        "verdict": _verdict(winner, closest, objective, len(results)),
        "candidates": rows,
        "pareto_front": pareto_front(rows, f"p{objective.slo.percentile}_ms"),
        "cost_basis": objective.cost.describe() if objective.cost is not None else None,
        "files": {"html": str(paths.html), "plot": str(paths.plot), "checkpoint": str(paths.checkpoint),
                  "config": str(paths.config) if winner is not None else None},
    }


def pareto_figure(doc: dict[str, Any], checkpoint: Checkpoint) -> Any:
    """Every measured point (grey), each configuration's shown point, the Pareto front, the SLO and the winner."""
    slo = doc["slo"]
    key = f"p{slo['percentile']}_ms"
    tag = f"served_latency_p{slo['percentile']}_ms"
    fig, ax = new_figure(7.5, 4.8)
    pts = [p for p in checkpoint.points if p.status == PointStatus.OK and p.value(tag) is not None]
    ax.scatter([p.throughput for p in pts], [p.value(tag) for p in pts], s=10, color="lightgrey",
               label="every measurement")
    rows = [r for r in doc["candidates"] if r.get(key) is not None]
    ax.scatter([r["throughput_rps"] for r in rows], [r[key] for r in rows], s=18, color="tab:grey",
               label="configuration (best or closest point)")
    front = sorted((r for r in rows if r["config_id"] in doc["pareto_front"]), key=lambda r: r["throughput_rps"])
    ax.plot([r["throughput_rps"] for r in front], [r[key] for r in front], "o-", color="tab:blue", label="Pareto front")
    for r in front:
        ax.annotate(r["config_id"], (r["throughput_rps"], r[key]), fontsize=6)
    ax.axhline(slo["latency_ms"], color="tab:red", linestyle="--", label=f"SLO p{slo['percentile']} {slo['latency_ms']:g} ms")
    winner = doc["recommendation"]
    if winner is not None:
        ax.scatter([winner["throughput_rps"]], [winner[key]], marker="*", s=220, color="gold", edgecolor="black",
                   zorder=3, label=f"recommended {winner['config_id']}")
    ax.set_xlabel("measured throughput (requests/s)")
    ax.set_ylabel(f"measured p{slo['percentile']} latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _html(doc: dict[str, Any], png: bytes, path: Path) -> None:
    report = Report(f"icd tune: {doc['model']}", subtitle=f"{doc['objective']} — {doc['mode']} search, {doc['status']}")
    report.add_text("Verdict", doc["verdict"])
    if doc["stop_reason"]:
        report.add_text("Stopped", doc["stop_reason"])
    for note in doc["notes"]:
        report.add_text("Note", note)
    report.add_text("How measured", doc["measured_on"])
    if doc["recommendation"] is not None:
        report.add_table("Recommended configuration", [{k: v for k, v in doc["recommendation"].items() if k != "records"}])
    report.add_png("Pareto front: throughput vs latency", png)
    columns = ["config_id", "status", "concurrency", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "errors",
               "points_measured"] + ([COST] if doc["cost_basis"] else [])
    report.add_table("Configurations", [{c: r.get(c) for c in columns} for r in doc["candidates"]], columns)
    if doc["space"]["skipped"]:
        report.add_text("Skipped combinations", "; ".join(doc["space"]["skipped"]))
    report.write(path)


def write_reports(checkpoint: Checkpoint, settings: TuneSettings, paths: RunPaths) -> dict[str, Any]:
    """Render plot, HTML and (with a winner) config.pbtxt, then the JSON report; returns the JSON document."""
    doc = summarize(checkpoint, settings, paths)
    import matplotlib.pyplot as plt

    fig = pareto_figure(doc, checkpoint)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(paths.plot, buffer.getvalue())
    _html(doc, buffer.getvalue(), paths.html)
    winner = doc["recommendation"]
    if winner is not None and checkpoint.base_config is not None:
        from icd.tune.space import Candidate

        base = model_config.from_json(checkpoint.base_config, str(paths.checkpoint))
        variants = {int(v): Variant(**d) for v, d in checkpoint.variants.items()}
        best = model_config.apply_candidate(base, Candidate.from_dict(winner), checkpoint.kind or model_config.KIND_CPU,
                                            variants)
        model_config.write_pbtxt(best, paths.config)
    elif paths.config.exists():  # never leave an earlier run's winner next to a report that has none
        paths.config.unlink()
    write_json_atomic(paths.report, doc)
    return doc
