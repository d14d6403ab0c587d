"""Stage 2, graph: a sparse symmetric correlation graph per permutable dimension (docs/graph.md)."""

from __future__ import annotations

from scipy import sparse

from icd.calibrate.stats import CalibrationStats
from icd.graph import build_graphs
from icd.pipeline.context import RunContext
from icd.pipeline.events import StageEvent


def run_graph(ctx: RunContext, stats: CalibrationStats, event: StageEvent) -> dict[str, sparse.csr_matrix]:
    graphs = build_graphs(stats, ctx.dims, top_k=ctx.cfg.solver.graph_top_k)
    event.numbers.update(dims=len(graphs), edges=int(sum(g.nnz for g in graphs.values()) // 2))
    return graphs
