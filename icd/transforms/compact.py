"""Structured compaction: remove whole attention heads and FFN channels, then re-fit what reads them.

``optimize_(encoder, CompactConfig(ffn_keep=0.6), ctx)`` — or a ``budget`` — in four steps, and an optional fifth:

1. **importance** of every head and FFN channel on calibration text (:mod:`icd.transforms.compact_importance`);
2. **allocation**: the kept units per layer, by uniform keep-ratios or a FLOPs / measured-latency budget spread
   across layers (:mod:`icd.transforms.compact_allocate`, :mod:`icd.transforms.compact_cost`);
3. **permute-to-front + slice** (:mod:`icd.transforms.compact_slice`): a smaller dense model, per-layer head
   counts and intermediate sizes, that saves, reloads, exports and runs on every runtime;
4. **reconstruction** (``reconstruct``, default): layer by layer on replayed calibration activations
   (:mod:`icd.calibrate.replay`), the Linear that reads the cut dim — attention output after heads go, FFN output
   after channels go — is re-fitted by least squares (:func:`icd.transforms.refit.fit_to_dense`: the same
   mathematics as N:M's re-fit) so that, on the compacted model's own inputs, it reproduces the dense model's
   outputs, bias included (``bias_correction``) and, with ``residual_feedback``, the residual stream's error too.
   Layers after the first cut are re-fitted even where nothing was cut, so they absorb the error that reaches
   them;
5. **distillation** (``distill_steps`` > 0, off by default): the re-fitted model trained end to end towards the model
   given, on the calibration texts (:mod:`icd.transforms.distill`) — minutes of training, not a re-fit.

Ratios and budgets are relative to the model given. Compacting in several steps (re-scoring the compacted,
re-fitted model between them) is what the pipeline's iterative mode does, one measured and accepted / rolled-back
step per iteration (:mod:`icd.pipeline.stages.compact`); :func:`step_targets` and :func:`config_for_step` give the
per-step configs.

Example:
    >>> ctx = TransformContext(tokenizer=tok, calibration_texts=texts)        # doctest: +SKIP
    >>> optimize_(encoder, CompactConfig(budget=0.6), ctx)                    # doctest: +SKIP
    >>> ctx.applied[-1].result.to_dict()["layers"][0]                          # doctest: +SKIP
    {'layer': 0, 'heads_before': 12, 'heads_after': 9, 'ffn_before': 1536, 'ffn_after': 870, ...}
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from icd.calibrate.replay import LayerReplay, LinearStats, replay_layers, restricted
from icd.measure.encode import tokenize
from icd.transforms.api import TransformContext, TransformRecord, register_transform
from icd.transforms.compact_allocate import Allocation, by_budget, by_ratio, ratio_sizes
from icd.transforms.compact_cost import UnitCosts, flops_costs, measured_costs
from icd.transforms.compact_importance import UnitScores, act_weight_scores, obs_scores, sums_of, unit_scores
from icd.transforms.compact_slice import (
    LayerSize,
    encoder_layers,
    head_dim,
    heads_problem,
    keep_ffn_,
    keep_heads_,
    layer_norm_paths,
    layer_roles,
    layer_sizes,
)
from icd.transforms.configs import CompactConfig
from icd.transforms.distill import DistillReport, DistillSettings, distill_
from icd.transforms.refit import (
    augmented_problem,
    correct_layernorm,
    feedback_target,
    fit_to_dense,
    output_error_vs_dense,
)


@dataclass
class LayerCompaction:
    """What compaction did to one layer (``*_error``: relative output error of the re-fitted Linear against the
    dense one on the calibration tokens, None when it was not re-fitted)."""

    layer: int
    heads_before: int
    heads_after: int
    ffn_before: int
    ffn_after: int
    attn_out_error: float | None = None
    ffn_out_error: float | None = None


@dataclass
class CompactReport:
    """Per-layer results of one compaction, its cost model and provenance."""

    record: TransformRecord
    criterion: str
    costs: UnitCosts
    cost_before: float
    cost_after: float
    layers: list[LayerCompaction] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    distill: DistillReport | None = None

    @property
    def kept_cost(self) -> float:
        """Cost after / cost before (the budget that was reached)."""
        return self.cost_after / self.cost_before if self.cost_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.record.to_dict(), "criterion": self.criterion, "costs": self.costs.to_dict(),
                "cost_before": self.cost_before, "cost_after": self.cost_after, "kept_cost": self.kept_cost,
                "seconds": self.seconds, "layers": [asdict(x) for x in self.layers],
                "distill": None if self.distill is None else self.distill.to_dict()}


def cuts_heads(config: CompactConfig) -> bool:
    """Whether ``config`` may remove attention heads."""
    if config.budget is not None:
        return config.units in ("both", "heads")
    return config.heads_keep is not None and config.heads_keep < 1.0


def compaction_problem(encoder: nn.Module, config: CompactConfig) -> str | None:
    """Why ``config`` cannot compact ``encoder`` (one line), or None: a family without a compaction layout, or
    heads to cut where the family cannot cut them per layer."""
    try:
        layer_sizes(encoder)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return f"compact: this model has no compaction layout ({exc})"
    reason = heads_problem(encoder) if cuts_heads(config) else None
    return None if reason is None else f"compact: {reason}"


def cost_model(encoder: nn.Module, config: CompactConfig) -> UnitCosts:
    """The cost model ``config`` asks for (FLOPs, or latency measured on this machine)."""
    if config.cost == "latency":
        return measured_costs(encoder, config.seq_len)
    return flops_costs(encoder, config.seq_len)


def allocate(encoder: nn.Module, config: CompactConfig, scores, costs: UnitCosts) -> Allocation:
    """Kept heads / FFN channels per layer for ``config`` (ValueError when a budget cannot be reached)."""
    sizes = layer_sizes(encoder)
    if config.budget is not None:
        return by_budget(scores, sizes, costs, config.budget, config.units, config.min_heads, config.min_ffn,
                         config.ffn_multiple)
    return by_ratio(scores, sizes, config.heads_keep, config.ffn_keep, config.min_heads, config.min_ffn,
                    config.ffn_multiple)


def _set_linear_(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        linear.weight.copy_(weight.to(linear.weight.dtype))
        if bias is not None and linear.bias is not None:
            linear.bias.copy_(bias.to(linear.bias.dtype))


def _dense_target(dense_layer: nn.Module, path: str, rows: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dense Linear's weight and bias (``rows``: only those output rows)."""
    dense = dense_layer.get_submodule(path)
    weight = dense.weight.detach()
    bias = None if dense.bias is None else dense.bias.detach()
    if rows is not None:
        weight = weight.index_select(0, rows)
        bias = None if bias is None else bias.index_select(0, rows)
    return weight, bias


def _fit_(layer: nn.Module, dense_layer: nn.Module, path: str, stats: LinearStats, config: CompactConfig,
          rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> float:
    """Least-squares re-fit of ``layer``'s Linear ``path`` towards the dense one from ``stats``; returns its relative
    output error on the calibration tokens. ``rows``: the dense Linear's output rows this one kept; ``columns``: its
    input columns this one kept (the prior the damping pulls towards is the dense weights' kept block)."""
    weight, bias = _dense_target(dense_layer, path, rows)
    prior = weight if columns is None else weight.index_select(1, columns)
    new_weight, new_bias = fit_to_dense(weight, bias if config.bias_correction else None, stats, config.damp, prior)
    linear = layer.get_submodule(path)
    _set_linear_(linear, new_weight, new_bias if config.bias_correction else bias)
    shift = None if new_bias is None or bias is None else (bias.double() - new_bias)
    return output_error_vs_dense(weight, linear.weight.detach(), stats, shift)


def _stats(layer: nn.Module, dense_layer: nn.Module, path: str, replay: LayerReplay, config: CompactConfig,
           residual_from: str | None = None, rows: torch.Tensor | None = None) -> LinearStats:
    """``path``'s statistics on the replayed inputs; with ``residual_feedback`` and ``residual_from`` (where the
    residual added to its output is: that sub-module's input, ``""`` the layer's) also the residual's error. The
    dense side is summed as output energy (``rows``: of those output rows), not as a Gram."""
    residual = config.residual_feedback and residual_from is not None
    weight, _ = _dense_target(dense_layer, path, rows)
    return replay.stats(layer, dense_layer, path, residual=residual, residual_from=residual_from, dense_weight=weight)


def _reselect(stats: LinearStats, dense_layer: nn.Module, path: str, keep: int, block: int,
              config: CompactConfig) -> list[int]:
    """The ``keep`` groups of ``block`` input channels to keep, scored on the compacted model's inputs against the
    least-squares target (the dense outputs): ``obs`` — the error left without the group; ``act_weight`` — the
    energy of the group's contribution."""
    weight, bias = _dense_target(dense_layer, path)
    with_bias = config.bias_correction and bias is not None
    if with_bias:
        _, target = augmented_problem(weight, bias, stats, config.damp, (weight, bias))
        weight_t, bias_t = target[:, :-1], target[:, -1]
    else:
        weight_t, bias_t = feedback_target(weight, stats, config.damp, weight), None
    total = stats.sum_hat if stats.sum_hat is not None else torch.zeros_like(stats.gram.gram.diagonal())
    sums = sums_of(stats.gram.gram, total, stats.gram.count)
    if config.importance == "obs":
        scores = obs_scores(weight_t, bias_t, sums, block, config.damp)
    else:
        scores = act_weight_scores(weight_t, sums, block)
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(int(i) for i in order[:keep])


def _head_rows(heads: list[int], d: int) -> torch.Tensor:
    index = torch.as_tensor(heads, dtype=torch.long)
    return (index.unsqueeze(1) * d + torch.arange(d).unsqueeze(0)).reshape(-1)


def _reselects(config: CompactConfig) -> bool:
    """Whether each layer's kept units are chosen anew inside the sequential pass (on the compacted model's
    inputs): with reconstruction, ``reselect`` and a criterion computable from one layer's statistics."""
    return config.reconstruct and config.reselect and config.importance in ("obs", "act_weight")


def _compact_sublayer_(encoder: nn.Module, index: int, kind: str, layer: nn.Module, dense_layer: nn.Module,
                       replay: LayerReplay, config: CompactConfig, keep: list[int], cut: bool) -> tuple[list[int], float]:
    """Cut (``cut``) and re-fit one sub-layer (``kind`` ``heads``: attention; ``ffn``) of layer ``index``; returns the
    kept units and the reading Linear's relative output error."""
    roles = layer_roles(encoder, index)
    reader, residual_from = (roles["attn_out"], "") if kind == "heads" else (roles["ffn_out"], roles["ffn_in"])
    block = head_dim(encoder) if kind == "heads" else 1
    slicer = keep_heads_ if kind == "heads" else keep_ffn_
    channels = (lambda units: _head_rows(units, block)) if kind == "heads" else (
        lambda units: torch.as_tensor(units, dtype=torch.long))
    stats = _stats(layer, dense_layer, reader, replay, config, residual_from)  # full width: the uncut units
    if cut and _reselects(config):
        keep = _reselect(stats, dense_layer, reader, len(keep), block, config)
    columns = None
    if cut:
        slicer(encoder, index, keep)
        columns = channels(keep)
        stats = restricted(stats, columns)
    if config.refit_inputs:
        writers = ("query", "key", "value") if kind == "heads" else ("ffn_in",)
        for role in writers:
            rows = channels(keep)
            _fit_(layer, dense_layer, roles[role], _stats(layer, dense_layer, roles[role], replay, config, rows=rows),
                  config, rows=rows)
        stats = _stats(layer, dense_layer, reader, replay, config, residual_from)  # its inputs changed
    error = _fit_(layer, dense_layer, reader, stats, config, columns=columns)
    if config.layernorm_correction and replay.dense_hidden:
        norm = layer_norm_paths(encoder)[0 if kind == "heads" else 1]
        correct_layernorm(layer, dense_layer, norm, replay.calls, replay.hidden, replay.dense_hidden)
    return keep, error


def _compact_layers_(encoder: nn.Module, allocation: Allocation, config: CompactConfig, batches) -> list[LayerCompaction]:
    """Cut every layer to ``allocation``'s sizes; with ``reconstruct``, layer by layer on replayed activations, each
    reading Linear re-fitted (and, with ``reselect``, the kept units chosen on the compacted model's inputs)."""
    before = layer_sizes(encoder)
    reports = [LayerCompaction(i, s.heads, len(allocation.heads[i]), s.intermediate, len(allocation.ffn[i]))
               for i, s in enumerate(before)]
    changed = [allocation.sizes[i] != before[i] for i in range(len(before))]
    if not config.reconstruct or not any(changed):
        for i in range(len(before)):
            if reports[i].heads_after < before[i].heads:
                keep_heads_(encoder, i, allocation.heads[i])
            if reports[i].ffn_after < before[i].intermediate:
                keep_ffn_(encoder, i, allocation.ffn[i])
        return reports
    first = changed.index(True)
    for index, layer, dense_layer, replay in replay_layers(encoder, encoder_layers(encoder), batches, feedback=True):
        if index < first or dense_layer is None:
            continue
        report = reports[index]
        allocation.heads[index], report.attn_out_error = _compact_sublayer_(
            encoder, index, "heads", layer, dense_layer, replay, config, allocation.heads[index],
            report.heads_after < report.heads_before)
        allocation.ffn[index], report.ffn_out_error = _compact_sublayer_(
            encoder, index, "ffn", layer, dense_layer, replay, config, allocation.ffn[index],
            report.ffn_after < report.ffn_before)
    return reports


def _length_sorted_batches(context: TransformContext, batch_size: int | None = None) -> list:
    """The calibration texts in batches of similar length (far less padding to replay layer by layer), of
    ``batch_size`` texts (the context's by default); the context's own batches when it holds no texts."""
    if context.tokenizer is not None and context.calibration_texts:
        return tokenize(context.tokenizer, list(context.calibration_texts), batch_size or context.batch_size,
                        context.max_length, sort_by_length=True)
    return context.calibration_batches()


def apply_compact(encoder: nn.Module, config: CompactConfig, context: TransformContext | None = None) -> CompactReport:
    """Compact ``encoder`` in place (see the module docstring); returns per-layer information.

    Raises:
        ValueError: no calibration data, or a budget no allocation reaches.
    """
    if context is None or not context.has_calibration_data:
        raise ValueError("compact: needs calibration data (a TransformContext with texts and a tokenizer, or batches)")
    problem = compaction_problem(encoder, config)
    if problem:
        raise ValueError(problem)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    costs = cost_model(encoder, config)
    seconds["cost_model"] = time.perf_counter() - start
    batches = _length_sorted_batches(context)
    sizes = layer_sizes(encoder)
    cost_before = costs.model(sizes)
    mark = time.perf_counter()
    if config.budget is None and _reselects(config):
        # keep-ratios fix every layer's counts; which units, the sequential pass chooses on the compacted inputs
        scores = UnitScores([torch.zeros(s.heads) for s in sizes], [torch.zeros(s.intermediate) for s in sizes],
                            config.importance)
    else:
        scores = unit_scores(encoder, batches, config.importance, config.damp, config.fisher_probes, config.seed)
    seconds["importance"] = time.perf_counter() - mark
    allocation = allocate(encoder, config, scores, costs)
    teacher = copy.deepcopy(encoder) if config.distill_steps else None
    mark = time.perf_counter()
    layers = _compact_layers_(encoder, allocation, config, batches)
    seconds["slice_refit"] = time.perf_counter() - mark
    distilled = None
    if teacher is not None:
        distilled = _distill_(encoder, teacher, config, context)
        seconds["distill"] = distilled.seconds
    seconds["total"] = time.perf_counter() - start
    return CompactReport(TransformRecord.from_config(config), config.importance, costs, cost_before,
                         costs.model(layer_sizes(encoder)), layers, seconds, distilled)


def _distill_(encoder: nn.Module, teacher: nn.Module, config: CompactConfig, context: TransformContext) -> DistillReport:
    """``config``'s distillation of the compacted ``encoder`` towards ``teacher`` (the model before the cut) on the
    context's calibration texts, in length-sorted batches of ``distill_batch_size``."""
    settings = DistillSettings(config.distill_steps, config.distill_lr, config.distill_hidden_weight, config.seed,
                               config.distill_token_noise)
    return distill_(encoder, teacher, _length_sorted_batches(context, config.distill_batch_size), settings)


# ----------------------------------------------------------------------------------------------------------------
# Iterative compaction: the same total target reached in several steps


@dataclass(frozen=True)
class StepTargets:
    """Absolute targets of each step of an iterative compaction, fixed before the first step.

    Attributes:
        sizes: per step, the per-layer counts a keep-ratio compaction aims at (None for a budget).
        costs: per step, the model cost a budget compaction aims at (None for keep-ratios).
        unit_costs: the cost model the budget targets were computed with.
    """

    sizes: list[list[LayerSize]] | None
    costs: list[float] | None
    unit_costs: UnitCosts


def step_targets(encoder: nn.Module, config: CompactConfig, steps: int) -> StepTargets:
    """Targets of ``steps`` geometric steps from the model now to ``config``'s target (the last step is it)."""
    if steps < 1:
        raise ValueError(f"compact: steps must be >= 1, got {steps}")
    unit_costs = cost_model(encoder, config)
    sizes = layer_sizes(encoder)
    if config.budget is not None:
        total = unit_costs.model(sizes)
        return StepTargets(None, [total * config.budget ** (s / steps) for s in range(1, steps + 1)], unit_costs)
    per_step = []
    for s in range(1, steps + 1):
        heads = None if config.heads_keep is None else config.heads_keep ** (s / steps)
        ffn = None if config.ffn_keep is None else config.ffn_keep ** (s / steps)
        multiple = config.ffn_multiple if s == steps else 1
        per_step.append(ratio_sizes(sizes, heads, ffn, config.min_heads, config.min_ffn, multiple))
    return StepTargets(per_step, None, unit_costs)


def config_for_step(encoder: nn.Module, config: CompactConfig, targets: StepTargets, step: int) -> CompactConfig:
    """The config of step ``step`` (1-based) for the model as it is now: ratios / budget relative to it."""
    now = layer_sizes(encoder)
    if targets.costs is not None:
        relative = min(targets.costs[step - 1] / targets.unit_costs.model(now), 1.0)
        return config.model_copy(update={"budget": relative})
    if targets.sizes is None:
        raise ValueError("config_for_step: targets hold neither sizes nor costs")
    want, last = targets.sizes[step - 1], step == len(targets.sizes)
    # keep-ratios leave the layers uniform, so one ratio per kind (the first layer's) holds for all
    heads = None if config.heads_keep is None else min(want[0].heads / now[0].heads, 1.0)
    ffn = None if config.ffn_keep is None else min(want[0].intermediate / now[0].intermediate, 1.0)
    return config.model_copy(update={"heads_keep": heads, "ffn_keep": ffn,
                                     "ffn_multiple": config.ffn_multiple if last else 1})


@register_transform(CompactConfig)
def _compact_handler(encoder: nn.Module, config: CompactConfig, context: TransformContext | None) -> CompactReport:
    return apply_compact(encoder, config, context)
