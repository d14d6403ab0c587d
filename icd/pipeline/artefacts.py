"""Writers of the run directory's artefacts (schemas in docs/artefacts.md). All writes are atomic, into the
staging folder of :class:`icd.pipeline.run_dir.StagedRun`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from icd.config.schema import IcdConfig
from icd.io.atomic import atomic_open, write_json_atomic
from icd.io.permutation_file import write_permutation_file
from icd.measure.metrics import Measurement
from icd.model.layout import bert_shape
from icd.pipeline import index_space
from icd.pipeline.model_store import save_run_encoder
from icd.pipeline.run_dir import StagedRun

if TYPE_CHECKING:
    from icd.pipeline.context import RunContext
    from icd.pipeline.runner import RunResult

CORRELATION_SCHEMA = "icd.correlation/v1"
METRICS_SCHEMA = "icd.metrics/v1"


def write_config_lock(staged: StagedRun, cfg: IcdConfig) -> None:
    write_json_atomic(staged.path("config.lock.json"), cfg.model_dump(mode="json"))


def write_all(staged: StagedRun, ctx: RunContext, result: RunResult) -> None:
    from icd.pipeline.report import write_run_report

    with ctx.events.stage("write_artefacts") as event:
        write_permutations(staged, ctx, result)
        write_correlations(staged, ctx, result)
        write_metrics(staged, result)
        runtime = result.runtime
        save_run_encoder(staged.staging, runtime.fp32, ctx.tokenizer, ctx.cfg.model, runtime.runtime_records)
        write_run_report(staged.path("report.html"), ctx, result)
        event.numbers.update(files=sorted(p.name for p in staged.staging.iterdir()))


def write_permutations(staged: StagedRun, ctx: RunContext, result: RunResult) -> None:
    details = {name: s.as_json() for name, s in result.solutions.items()}
    perms = result.perms or {d.name: np.arange(d.size) for d in ctx.dims}
    write_permutation_file(staged.path("permutation.json"), ctx.dims, perms,
                           model=ctx.cfg.model.model_dump(mode="json"), details=details)


def write_correlations(staged: StagedRun, ctx: RunContext, result: RunResult) -> None:
    """Named arrays: per dim ``graph/<dim>/{row,col,data,shape}`` (upper triangle, COO) and the per-channel
    statistics of the residual stream and every Linear's input (``stats/<name>/{rms,absmax,mean}``), all indexed
    by the *original* model's channels, like permutation.json (``index_space`` = ``original``).
    Full Gram matrices are not stored (hundreds of MB at bert-base shapes)."""
    arrays: dict[str, np.ndarray] = {"schema": np.asarray(CORRELATION_SCHEMA), "index_space": np.asarray("original")}
    graphs, inputs = result.graphs, {}
    if result.calibrated_on and result.runtime is not None:
        encoder = result.runtime.fp32
        origins = index_space.channel_origins(result.calibrated_on, ctx.dims, bert_shape(encoder).head_dim)
        graphs = index_space.graphs_in_original_order(graphs, origins)
        inputs = index_space.input_origins(encoder, result.calibrated_on)
    for name, graph in graphs.items():
        upper = sparse.triu(graph, k=1).tocoo()
        arrays[f"graph/{name}/row"] = upper.row.astype(np.int32)
        arrays[f"graph/{name}/col"] = upper.col.astype(np.int32)
        arrays[f"graph/{name}/data"] = upper.data.astype(np.float32)
        arrays[f"graph/{name}/shape"] = np.asarray(graph.shape, dtype=np.int64)
    if result.stats is not None:
        tables = {"hidden": result.stats.hidden, **{f"input/{k}": v for k, v in result.stats.inputs.items()}}
        for name, channel in tables.items():
            count = max(int(channel.count), 1)
            origin = inputs.get(name.removeprefix("input/"))
            columns = {"rms": np.sqrt(channel.sq_sum / count), "absmax": np.asarray(channel.absmax),
                       "mean": np.asarray(channel.sum) / count}
            for column, values in columns.items():
                ordered = index_space.vector_in_original_order(values, origin)
                arrays[f"stats/{name}/{column}"] = ordered.astype(np.float32)
    with atomic_open(staged.path("correlation_matrix.npz"), "wb") as handle:
        np.savez_compressed(handle, **arrays)


def _efficacy(result: RunResult) -> float | None:
    values = [s.solver["efficacy"] for s in result.solutions.values() if "efficacy" in s.solver]
    return float(np.mean(values)) if values else None


def metrics_document(result: RunResult) -> dict[str, Any]:
    final = result.final
    measurements = final.measurements(result.dense)
    efficacy = _efficacy(result)
    measurements.append(Measurement("efficacy_mean", efficacy,
                                    "mean N:M efficacy of the permutation search over the searched dims" if efficacy
                                    is not None else "not measured: no N:M transform in this run"))
    locality = [s for s in result.solutions.values() if s.objective == "locality"]
    if locality:
        measurements.append(Measurement("cost_locality_before", float(sum(s.cost_before for s in locality)),
                                        "sum of J over locality-solved dims, identity order"))
        measurements.append(Measurement("cost_locality_after", float(sum(s.cost_after for s in locality)),
                                        "sum of J over locality-solved dims, solved order"))
    return {
        "schema": METRICS_SCHEMA,
        "mode": result.mode,
        "metrics": [m.to_json() for m in measurements],
        "dense": [m.to_json() for m in result.dense.measurements()],
        "variants": [v.row(result.dense) for v in result.variants],
        "decisions": [{"accepted": d.accepted, "reason": d.reason, "evidence": d.evidence} for d in result.decisions],
        "runtime_transforms": result.runtime.runtime_records if result.runtime else [],
        "transform_reports": result.runtime.reports if result.runtime else [],
        "weight_transforms": result.weight_records,
    }


def write_metrics(staged: StagedRun, result: RunResult) -> None:
    write_json_atomic(staged.path("metrics.json"), metrics_document(result))
