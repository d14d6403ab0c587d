"""``icd run``: the stages in order, for one mode, into a staged run directory published only when complete.

dense:     load → measure
linear:    load → calibrate → graph → solve → apply → transform → measure
iterative: linear, then per iteration: calibrate the transformed model → graph → constrained re-solve → apply
           → measure → accept or roll back; with a ``compact`` transform, each iteration instead compacts one
           step more towards the same target (stages/compact.py) → measure → accept or roll back

An iteration's calibration is a re-calibration only when a weight transform changed the model's function since
the last one; when the model differs from the calibrated one by permutations alone (no weight transforms, or
an iteration that only re-permuted), its statistics are the calibrated ones reordered
(:func:`icd.pipeline.index_space.stats_after_fold`, equal to a re-calibration up to rounding, tested), and the
event says so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from icd.config.schema import IcdConfig, PipelineMode
from icd.data.corpus import load_split
from icd.model.encoder import Encoder
from icd.model.layout import DimKind, permutable_dims
from icd.model.loader import load_encoder, load_tokenizer
from icd.pipeline import artefacts
from icd.pipeline.context import RunContext
from icd.pipeline.events import EventLog
from icd.pipeline.index_space import stats_after_fold
from icd.pipeline.run_dir import StagedRun
from icd.pipeline.stages.accept import Decision, decide
from icd.pipeline.stages.apply import fold_
from icd.pipeline.stages.calibrate import run_calibrate
from icd.pipeline.stages.compact import CompactionPlan, check_compaction, compact_step, decide_step
from icd.pipeline.stages.graph import run_graph
from icd.pipeline.stages.measure import VariantMetrics, measure_variant, reference_outputs
from icd.pipeline.stages.solve import DimSolution, run_solve
from icd.pipeline.stages.transform import (
    RuntimeModel,
    build_runtime_model,
    carry_runtime_model,
    has_runtime_transforms,
    run_weight_transforms,
)
from icd.transforms.compact_slice import layer_sizes
from icd.transforms.configs import NMSparsityConfig
from icd.transforms.permute import compose_permutations


@dataclass
class RunResult:
    """Everything a finished run measured and decided (what the artefacts are written from)."""

    mode: str
    out: Path
    dense: VariantMetrics
    final: VariantMetrics
    variants: list[VariantMetrics] = field(default_factory=list)
    solutions: dict[str, DimSolution] = field(default_factory=dict)
    resolutions: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    perms: dict[str, np.ndarray] = field(default_factory=dict)
    weight_records: list[dict[str, Any]] = field(default_factory=list)
    runtime: RuntimeModel | None = None
    graphs: dict[str, Any] = field(default_factory=dict)
    stats: Any = None
    calibrated_on: dict[str, np.ndarray] = field(default_factory=dict)
    """Permutations (from the original order) of the model that ``graphs`` and ``stats`` were calibrated on:
    empty for the original model; after an accepted iteration, the layout before that iteration. Their indices
    are that model's channels; the artefact writer maps them to the original order (icd/pipeline/index_space.py)."""


class Runner:
    """Runs one configuration into one output folder."""

    def __init__(self, cfg: IcdConfig, out: Path, progress: bool = True, console: Console | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.console = console or Console(stderr=True)
        self.progress = progress
        self._reorder: tuple[Any, Encoder, dict[str, np.ndarray]] | None = None
        """``(stats, model, perms)`` when the working model is ``model`` (calibrated: ``stats``) folded with
        ``perms`` alone: its statistics follow from ``stats`` (:meth:`_stats_after_folds`, computed once when the
        runtime transforms or an iteration need them)."""
        self._reordered: Any = None

    def run(self) -> RunResult:
        staged = StagedRun.create(self.out)
        try:
            result = self._run_into(staged)
        except BaseException:
            staged.discard()
            raise
        staged.publish(self.cfg.pipeline.mode.value, {"name": self.cfg.name})
        return result

    # -- stages -------------------------------------------------------------------------------------------
    def _context(self, staged: StagedRun) -> RunContext:
        events = EventLog(staged.path("events.jsonl"), self.console)
        with events.stage("load") as event:
            data = self.cfg.data
            split = load_split(data.calibration_texts, data.heldout_texts, data.seed, data.sources)
            # the lock records the sources at the versions read (a re-run elsewhere refuses other versions)
            self.cfg = self.cfg.model_copy(update={"data": data.model_copy(update={"sources": split.sources})})
            check_compaction(self.cfg)  # bad compaction input: one line before any model is loaded
            tokenizer = load_tokenizer(self.cfg.model)
            event.numbers.update(calibration_texts=len(split.calibration), heldout_texts=len(split.heldout),
                                 corpus_pool=split.pool_sizes, corpus_sha256=split.pool_sha256)
        return RunContext(self.cfg, tokenizer, split, [], events, self.console, self.progress)

    def _run_into(self, staged: StagedRun) -> RunResult:
        ctx = self._context(staged)
        artefacts.write_config_lock(staged, self.cfg)
        with ctx.events.stage("load_model") as event:
            dense = load_encoder(self.cfg.model)
            ctx.dims = permutable_dims(dense, self.cfg.pipeline.dims)
            event.numbers.update(params=sum(p.numel() for p in dense.parameters()), dims=len(ctx.dims))
        with ctx.events.stage("measure_dense") as event:
            reference = reference_outputs(ctx, dense)
            dense_metrics = measure_variant(ctx, "dense", dense, reference, outputs=reference)  # encoded once
            event.numbers.update(latency_median_ms=dense_metrics.latency.median_ms)
        mode = self.cfg.pipeline.mode
        if mode is PipelineMode.DENSE:
            result = RunResult(mode.value, self.out, dense_metrics, dense_metrics, [dense_metrics],
                               runtime=RuntimeModel(encoder=dense, fp32=dense))
        else:
            result = self._optimize(ctx, dense, reference, dense_metrics)
        artefacts.write_all(staged, ctx, result)
        return result

    def _optimize(self, ctx: RunContext, dense: Encoder, reference, dense_metrics: VariantMetrics) -> RunResult:
        with ctx.events.stage("calibrate") as event:
            stats = run_calibrate(ctx, dense, event)
        with ctx.events.stage("graph") as event:
            graphs = run_graph(ctx, stats, event)
        with ctx.events.stage("solve") as event:
            solutions = run_solve(ctx, dense, stats, graphs, event)
        perms = {name: s.perm for name, s in solutions.items()}
        working = copy.deepcopy(dense)
        with ctx.events.stage("apply") as event:
            fold_(working, perms)
            event.numbers.update(permuted_dims=sum(not np.array_equal(p, np.arange(p.size)) for p in perms.values()))
        plan = CompactionPlan.of(ctx, working)
        with ctx.events.stage("transform") as event:
            weight_records = run_weight_transforms(plan.context_for_step(ctx, working, 1) if plan else ctx, working,
                                                   event)
        self._set_reorder(None if weight_records else (stats, dense, perms))
        with ctx.events.stage("measure") as event:
            # int8 reads its activation ranges from the working model's statistics when they follow from `stats`
            stats_now = self._stats_after_folds() if has_runtime_transforms(ctx) else None
            runtime = build_runtime_model(ctx, working, stats_now)
            linear = measure_variant(ctx, "linear", runtime.encoder, reference)
            event.numbers.update(cos_mean=linear.fidelity.cos_mean, latency_median_ms=linear.latency.median_ms,
                                 speedup=linear.speedup_over(dense_metrics))
        result = RunResult(ctx.cfg.pipeline.mode.value, self.out, dense_metrics, linear, [dense_metrics, linear],
                           solutions=solutions, perms=perms, weight_records=weight_records, runtime=runtime,
                           graphs=graphs, stats=stats)
        if ctx.cfg.pipeline.mode is PipelineMode.ITERATIVE:
            for iteration in range(1, ctx.cfg.pipeline.iterations + 1):
                if plan is not None:  # compaction: each iteration compacts one step more (stages/compact.py)
                    working, accepted = self._compact_more(ctx, plan, iteration, working, reference, result)
                    if not accepted:
                        break
                    continue
                working = self._iterate(ctx, iteration, working, reference, result)
        return result

    def _compact_more(self, ctx: RunContext, plan: CompactionPlan, iteration: int, working: Encoder, reference,
                      result: RunResult) -> tuple[Encoder, bool]:
        prefix = f"iter{iteration}."
        with ctx.events.stage(prefix + "compact") as event:
            candidate, record = compact_step(ctx, plan, working, iteration + 1, event)
        with ctx.events.stage(prefix + "measure") as event:
            runtime = build_runtime_model(ctx, candidate)
            metrics = measure_variant(ctx, f"iterative{iteration}", runtime.encoder, reference)
            event.numbers.update(cos_mean=metrics.fidelity.cos_mean, latency_median_ms=metrics.latency.median_ms)
        before, after = (plan.targets.unit_costs.model(layer_sizes(m)) for m in (working, candidate))
        with ctx.events.stage(prefix + "accept") as event:
            decision = decide_step(result.final, metrics, ctx.cfg.pipeline.accept, before, after)
            event.numbers.update(accepted=decision.accepted, reason=decision.reason)
        result.decisions.append(decision)
        result.resolutions.append({"iteration": iteration, "accepted": decision.accepted, "compaction_step": record})
        result.variants.append(metrics)
        if not decision.accepted:
            ctx.console.log(f"[yellow]compaction step {iteration + 1} rolled back[/yellow]: {decision.reason}")
            return working, False
        result.final, result.runtime = metrics, runtime
        result.weight_records.append(record)
        return candidate, True

    def _iterate(self, ctx: RunContext, iteration: int, working: Encoder, reference, result: RunResult) -> Encoder:
        prefix = f"iter{iteration}."
        with ctx.events.stage(prefix + "calibrate") as event:
            stats = self._calibrate_working(ctx, working, event)
        with ctx.events.stage(prefix + "graph") as event:
            graphs = run_graph(ctx, stats, event)
        with ctx.events.stage(prefix + "resolve") as event:
            solutions = run_solve(ctx, working, stats, graphs, event, group_for=self._groups(ctx, working))
        second = {name: s.perm for name, s in solutions.items()}
        head_dim = working.bert.config.hidden_size // working.bert.config.num_attention_heads
        total = compose_permutations(result.perms, second, head_dim)
        candidate = copy.deepcopy(working)
        with ctx.events.stage(prefix + "apply") as event:
            fold_(candidate, second)
        with ctx.events.stage(prefix + "measure") as event:
            runtime = carry_runtime_model(result.runtime, working, candidate, second) if result.runtime else None
            if runtime is None:  # a new search, on the candidate's statistics (`stats` reordered by the fold)
                runtime = build_runtime_model(ctx, candidate, stats_after_fold(stats, working, second)
                                              if has_runtime_transforms(ctx) else None)
            elif runtime.runtime_records:
                event.numbers.update(runtime_transforms="carried from the accepted model through the permutation")
            metrics = measure_variant(ctx, f"iterative{iteration}", runtime.encoder, reference)
            event.numbers.update(cos_mean=metrics.fidelity.cos_mean, latency_median_ms=metrics.latency.median_ms)
        before = float(sum(s.cost_before for s in solutions.values()))
        after = float(sum(s.cost_after for s in solutions.values()))
        with ctx.events.stage(prefix + "accept") as event:
            decision = decide(result.final, metrics, ctx.cfg.pipeline.accept, before, after)
            event.numbers.update(accepted=decision.accepted, reason=decision.reason)
        result.decisions.append(decision)
        result.resolutions.append({"iteration": iteration, "accepted": decision.accepted,
                                   "dims": [s.as_json() for s in solutions.values()]})
        result.variants.append(metrics)
        if not decision.accepted:
            ctx.console.log(f"[yellow]iteration {iteration} rolled back[/yellow]: {decision.reason}")
            return working
        result.graphs, result.stats, result.calibrated_on = graphs, stats, result.perms
        result.final, result.perms, result.runtime = metrics, total, runtime
        self._set_reorder((stats, working, second))
        return candidate

    def _set_reorder(self, reorder: tuple[Any, Encoder, dict[str, np.ndarray]] | None) -> None:
        self._reorder, self._reordered = reorder, None

    def _stats_after_folds(self) -> Any:
        """The working model's statistics from the last calibration reordered by the permutations folded since
        (once per fold), or None when a weight transform changed the function since."""
        if self._reorder is not None and self._reordered is None:
            self._reordered = stats_after_fold(*self._reorder)
        return self._reordered

    def _calibrate_working(self, ctx: RunContext, working: Encoder, event) -> Any:
        """The working model's statistics: reordered from the last calibration when only permutations were folded
        since (same function), else a calibration."""
        stats = self._stats_after_folds()
        if stats is None:
            return run_calibrate(ctx, working, event)
        event.numbers.update(reused=True, texts=len(ctx.split.calibration), tokens=int(stats.meta.get("tokens", 0)),
                             linears=len(stats.inputs), how="the last calibration's statistics reordered by the "
                             "permutations folded since (a fold preserves the function)")
        return stats

    @staticmethod
    def _groups(ctx: RunContext, encoder: Encoder) -> dict[str, int]:
        """Dims read by N:M-pruned Linears may only move whole groups of m (the pattern stays valid)."""
        from icd.model.layout import input_readers
        from icd.transforms.nm_sparsity import select_linears

        groups: dict[str, int] = {}
        for config in ctx.cfg.transforms:
            if isinstance(config, NMSparsityConfig):
                pruned = set(select_linears(encoder, config.scope))
                for dim in ctx.dims:
                    if dim.kind in (DimKind.HEADS, DimKind.QK):
                        continue  # whole heads / Q,K rows never move an input-column group
                    if any(name in pruned for name in input_readers(encoder, dim.name)):
                        groups[dim.name] = config.m
        return groups


def run_config(cfg: IcdConfig, out: Path, progress: bool = True, console: Console | None = None) -> RunResult:
    """Run ``cfg`` into ``out`` (see :class:`Runner`)."""
    return Runner(cfg, out, progress=progress, console=console).run()
