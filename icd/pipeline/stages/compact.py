"""Compaction in ``icd run``: checked before any work, one step in ``linear`` mode, several in ``iterative``.

A ``compact`` transform (``CompactConfig``) is a weight transform: the transform stage applies it. Its target is
fixed against the model the run loaded (:func:`icd.transforms.compact.step_targets`):

* ``linear`` — one step, straight to the target (what ``icd pair`` compares with);
* ``iterative`` — ``pipeline.iterations + 1`` geometric steps to the *same* target: the transform stage takes the
  first, each iteration re-calibrates the compacted, re-fitted model (importance scored anew), re-solves the
  allocation and compacts one step more, then the candidate is measured on held-out text and **accepted or rolled
  back** (:func:`decide_step`). A rolled-back step ends the iterations: the run keeps the last accepted model and
  its report says the target was not reached.

Bad input is refused while the run loads, before any model is loaded or measured (:func:`check_compaction`): a
budget no allocation reaches, heads to cut in a family that cannot cut them per layer, a model without a compaction
layout — one line, exit 2, nothing written.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from icd.config.schema import AcceptSection, IcdConfig, PipelineMode
from icd.errors import ConfigError
from icd.model.encoder import Encoder
from icd.pipeline.context import RunContext
from icd.pipeline.events import StageEvent
from icd.pipeline.stages.accept import Decision
from icd.pipeline.stages.measure import VariantMetrics
from icd.transforms.compact import StepTargets, config_for_step, step_targets
from icd.transforms.configs import CompactConfig


def compaction_index(ctx: RunContext) -> int | None:
    """Position of the (first) ``compact`` transform in ``transforms[]``, or None."""
    return next((i for i, t in enumerate(ctx.cfg.transforms) if isinstance(t, CompactConfig)), None)


def steps_of(ctx: RunContext) -> int:
    """Compaction steps of this run: ``iterations + 1`` in iterative mode, else 1."""
    return ctx.cfg.pipeline.iterations + 1 if ctx.cfg.pipeline.mode is PipelineMode.ITERATIVE else 1


def skeleton_encoder(cfg: IcdConfig) -> Encoder:
    """The configured model's shapes with random weights (only ``config.json`` is read): what the compaction
    checks need — sizes, family, FLOPs, and the latency of a layer, which does not depend on the weights."""
    import transformers

    from icd.config.schema import ModelSource, ModelTask
    from icd.model.families import family_for
    from icd.model.loader import checkpoint_path, read_model_type

    section = cfg.model
    if section.source == ModelSource.BERT_CONFIG and section.bert_config is not None:
        config = transformers.BertConfig(**section.bert_config.model_dump(), num_labels=section.num_labels)
        family = family_for("bert")
    else:
        folder = checkpoint_path(section)
        family = family_for(read_model_type(folder))
        config = transformers.AutoConfig.from_pretrained(str(folder), num_labels=section.num_labels)
    if section.task == ModelTask.SEQUENCE_CLASSIFICATION:
        hf = getattr(transformers, family.classifier_class)(config)
    else:
        hf = getattr(transformers, family.base_class)(config, **family.base_kwargs)
    return Encoder(hf.eval(), section.task.value).eval()


def check_compaction(cfg: IcdConfig) -> None:
    """Refuse, before any work, a compaction that cannot run on the configured model (ConfigError naming the
    field): a family without a compaction layout, heads to cut where they cannot be, a budget no allocation
    reaches. Runs on :func:`skeleton_encoder` (the checkpoint's weights are not loaded for it)."""
    from icd.transforms.compact import compaction_problem, cost_model
    from icd.transforms.compact_allocate import smallest_sizes
    from icd.transforms.compact_slice import layer_sizes

    index = next((i for i, t in enumerate(cfg.transforms) if isinstance(t, CompactConfig)), None)
    if index is None:
        return
    config = cfg.transforms[index]
    field = f"transforms.{index}"
    encoder = skeleton_encoder(cfg)
    problem = compaction_problem(encoder, config)
    if problem:
        raise ConfigError(f"{field}: {problem}")
    if config.budget is not None:
        sizes = layer_sizes(encoder)
        costs = cost_model(encoder, config)
        floor = costs.model(smallest_sizes(sizes, config.units, config.min_heads, config.min_ffn)) / costs.model(sizes)
        if config.budget < floor:
            raise ConfigError(f"{field}.budget={config.budget}: no allocation reaches it; the smallest model allowed "
                              f"(units={config.units!r}, min_heads={config.min_heads}, min_ffn={config.min_ffn}) keeps "
                              f"{floor:.3f} of the {config.cost} cost")


@dataclasses.dataclass
class CompactionPlan:
    """The configured compaction, its fixed targets and how many steps the run takes."""

    index: int
    config: CompactConfig
    targets: StepTargets
    steps: int

    @classmethod
    def of(cls, ctx: RunContext, encoder: Encoder) -> CompactionPlan | None:
        index = compaction_index(ctx)
        if index is None:
            return None
        config = ctx.cfg.transforms[index]
        steps = steps_of(ctx)
        return cls(index, config, step_targets(encoder, config, steps), steps)

    def context_for_step(self, ctx: RunContext, encoder: Encoder, step: int) -> RunContext:
        """``ctx`` whose ``transforms[]`` holds step ``step``'s compaction config in place of the configured one
        (and, after the first step, nothing else: the other weight transforms ran once)."""
        step_config = config_for_step(encoder, self.config, self.targets, step)
        transforms = list(ctx.cfg.transforms)
        transforms[self.index] = step_config
        if step > 1:
            transforms = [step_config]
        cfg = ctx.cfg.model_copy(update={"transforms": transforms})
        return dataclasses.replace(ctx, cfg=cfg)


def compact_step(ctx: RunContext, plan: CompactionPlan, working: Encoder, step: int,
                 event: StageEvent) -> tuple[Encoder, dict[str, Any]]:
    """A copy of ``working`` compacted one step more (re-calibrated and re-scored on it); returns it and the
    transform's record."""
    from icd.pipeline.stages.transform import run_weight_transforms
    from icd.transforms.compact_slice import layer_sizes

    candidate = copy.deepcopy(working)
    records = run_weight_transforms(plan.context_for_step(ctx, working, step), candidate, event)
    event.numbers.update(step=step, steps=plan.steps, layer_sizes=[s.to_dict() for s in layer_sizes(candidate)])
    return candidate, records[0]


def decide_step(current: VariantMetrics, candidate: VariantMetrics, rule: AcceptSection, cost_before: float,
                cost_after: float) -> Decision:
    """Accept one more compaction step when its held-out mean cosine stays at or above
    ``pipeline.accept.min_cos_mean`` and it lowers the cost by at least ``pipeline.accept.min_gain`` (> 0 when that
    is 0). Cutting more always costs some fidelity, so the floor — not the current model — is the reference."""
    gain = 0.0 if cost_before <= 0 else (cost_before - cost_after) / cost_before
    cand = candidate.fidelity.cos_mean
    evidence = {"cos_mean_current": current.fidelity.cos_mean, "cos_mean_candidate": cand,
                "min_cos_mean": rule.min_cos_mean, "cost_before": cost_before, "cost_after": cost_after,
                "gain": gain, "min_gain": rule.min_gain}
    if cand < rule.min_cos_mean:
        return Decision(False, f"compaction step: cos_mean {cand:.5f} below the floor {rule.min_cos_mean}", evidence)
    if gain < rule.min_gain or (rule.min_gain == 0.0 and gain <= 0.0):
        return Decision(False, f"compaction step: cost gain {gain:.4%} not above the required {rule.min_gain:.4%}",
                        evidence)
    return Decision(True, f"compaction step: cos_mean {cand:.5f} at or above the floor, cost gain {gain:.4%}",
                    evidence)
