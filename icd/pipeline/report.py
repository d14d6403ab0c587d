"""``report.html`` of a run: variants (fidelity, latency), cost before/after per dimension, stage times,
iterative decisions. Rendered from what the run measured; nothing is estimated here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icd.report.html import Report, new_figure

if TYPE_CHECKING:
    from icd.pipeline.context import RunContext
    from icd.pipeline.runner import RunResult


def _cost_figure(result: RunResult):
    names = list(result.solutions)
    before = np.array([result.solutions[n].cost_before for n in names], dtype=float)
    after = np.array([result.solutions[n].cost_after for n in names], dtype=float)
    ratio = np.divide(after, before, out=np.ones_like(after), where=before > 0)
    fig, ax = new_figure(10, 3.6)
    ax.bar(range(len(names)), ratio, color=["tab:green" if r <= 1 else "tab:blue" for r in ratio])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_ylabel("after / before")
    ax.set_title("objective after / before per dimension (locality: lower is better; N:M kept: higher is better)")
    return fig


def _fidelity_figure(result: RunResult):
    rows = [v.row(result.dense) for v in result.variants]
    fig, ax = new_figure(7, 3.2)
    names = [r["variant"] for r in rows]
    ax.bar(np.arange(len(rows)) - 0.2, [r["cos_mean"] for r in rows], 0.4, label="cos mean")
    ax.bar(np.arange(len(rows)) + 0.2, [r["nn_agreement"] for r in rows], 0.4, label="NN agreement")
    ax.set_xticks(range(len(rows)), names)
    ax.set_ylim(min(0.5, min(r["cos_mean"] for r in rows) - 0.05), 1.01)
    ax.legend(loc="lower left")
    ax.set_title("fidelity vs dense fp32 on held-out text")
    return fig


def write_run_report(path: Path, ctx: RunContext, result: RunResult) -> None:
    report = Report(f"icd run — {ctx.cfg.name} ({result.mode})", subtitle=str(result.out))
    report.add_table("Variants (held-out fidelity vs dense fp32; in-process latency)",
                     [v.row(result.dense) for v in result.variants])
    if len(result.variants) > 1:
        report.add_figure("Fidelity", _fidelity_figure(result))
    if result.solutions:
        report.add_table("Permutations: objective before / after per dimension",
                         [s.as_json() | {"size": s.dim.size} for s in result.solutions.values()],
                         ["name", "size", "objective", "cost_before", "cost_after", "seconds", "method", "efficacy"])
        report.add_figure("Objective before / after", _cost_figure(result))
    for i, decision in enumerate(result.decisions, start=1):
        report.add_text(f"Iteration {i}: {'accepted' if decision.accepted else 'rolled back'}", decision.reason)
        report.add_json(f"Iteration {i} evidence", decision.evidence)
    if result.runtime is not None and result.runtime.reports:
        report.add_json("Runtime transforms (what stayed fp32 and why)", result.runtime.reports)
    report.add_table("Stages (wall time)", [{"stage": e.stage, "seconds": e.seconds} for e in ctx.events.events])
    report.write(path)
