"""Stage 5, transform: the configured transforms (``transforms[]``) through ``icd.optimize_``.

Weight transforms change the fp32 weights of the working model. Runtime transforms are prepared on a copy and
applied when the model is measured or loaded; their provenance record is saved with the model. Which is which is
the transform registry's to say (:func:`icd.transforms.api.transform_kind`), not this stage's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from icd.model.encoder import Encoder
from icd.pipeline.context import RunContext
from icd.pipeline.events import StageEvent
from icd.pipeline.index_space import input_origins
from icd.transforms.api import (
    TransformContext,
    TransformKind,
    TransformRecord,
    optimize_,
    prepare_runtime_transform,
    transform_kind,
)
from icd.transforms.permute import apply_permutations_
from icd.transforms.runtime import (
    INT8_RECORD_TYPE,
    apply_runtime_transforms_,
    decode_exponents,
    encode_exponents,
)


def is_runtime(config: BaseModel) -> bool:
    return transform_kind(config) == TransformKind.RUNTIME


def transform_context(ctx: RunContext, stats: Any = None) -> TransformContext:
    data = ctx.cfg.data
    return TransformContext(tokenizer=ctx.tokenizer, calibration_texts=ctx.split.calibration,
                            batch_size=data.batch_size, max_length=ctx.cfg.model.max_length, stats=stats)


@dataclass
class RuntimeModel:
    """A model ready to measure or serve, and the records that rebuild it from the saved fp32 weights."""

    encoder: Encoder
    fp32: Encoder
    runtime_records: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)


def has_runtime_transforms(ctx: RunContext) -> bool:
    """Whether the config has a runtime transform (one that may read calibration statistics)."""
    return any(is_runtime(config) for config in ctx.cfg.transforms)


def run_weight_transforms(ctx: RunContext, encoder: Encoder, event: StageEvent, stats: Any = None) -> list[dict]:
    """Apply every weight transform in place; returns their records."""
    tctx = transform_context(ctx, stats)
    records = []
    for config in ctx.cfg.transforms:
        if is_runtime(config):
            continue
        optimize_(encoder, config, tctx)
        records.append(tctx.applied[-1].record.to_dict())
    event.numbers.update(weight_transforms=[r["type"] for r in records])
    return records


def build_runtime_model(ctx: RunContext, encoder: Encoder, stats: Any = None) -> RuntimeModel:
    """A copy of ``encoder`` with the runtime transforms applied (``encoder`` is not changed).

    ``stats``: a calibration of ``encoder`` as it is (e.g. int8 takes its activation ranges from it instead of a
    pass over the calibration texts); given to the first runtime transform only, as the first may change the fp32
    model it prepares on (int8 folds V->O scalings).
    """
    runtime_configs = [c for c in ctx.cfg.transforms if is_runtime(c)]
    if not runtime_configs:
        return RuntimeModel(encoder=encoder, fp32=encoder)
    fp32 = copy.deepcopy(encoder)
    records, reports = [], []
    for index, config in enumerate(runtime_configs):
        record, report = prepare_runtime_transform(fp32, config, transform_context(ctx, stats if index == 0 else None))
        records.append(record)
        reports.append(report)
    quantized = copy.deepcopy(fp32)
    apply_runtime_transforms_(quantized, records)
    return RuntimeModel(encoder=quantized, fp32=fp32, runtime_records=records, reports=reports)


def carry_runtime_model(runtime: RuntimeModel, before: Encoder, candidate: Encoder,
                        perms: dict[str, np.ndarray]) -> RuntimeModel | None:
    """The runtime model of ``candidate`` (``before`` folded with ``perms``) from ``runtime``, prepared for
    ``before``, without a new search: None when a record is of a type this cannot carry (then build anew).

    Dynamic int8 commutes with a channel permutation: per-output-channel weight scales move with their rows, a
    row's range over its columns and a token's range over its channels do not change, and the smoothing
    exponents and fp32 channels are per input channel. So the int8 model of the permuted model is the int8 model
    of the same choices, reordered: the fp32 model with its V->O folds is folded with ``perms`` and every input
    exponent vector and fp32 channel set reordered like its Linear's columns. A new search would find the same
    choices up to the rounding of
    the permuted model's sums (tests/pipeline/test_carry_runtime.py compares the two). GPTQ-rounded weights are not
    carried (their codes depend on the column order): None.
    """
    if not runtime.runtime_records:
        return RuntimeModel(encoder=candidate, fp32=candidate)
    if any(record.get("type") != INT8_RECORD_TYPE for record in runtime.runtime_records):
        return None
    if any(record.get("data", {}).get("weight_rounding", "nearest") != "nearest" for record in runtime.runtime_records):
        return None  # GPTQ's codes depend on the column order: a permuted model is rounded anew
    fp32 = copy.deepcopy(runtime.fp32)
    apply_permutations_(fp32, perms)
    origins = input_origins(before, perms)
    records = [_int8_record_reordered(record, origins) for record in runtime.runtime_records]
    reports = [{**report, "carried": "the choices of the model before the last permutation, reordered with it "
                "(int8 commutes with a channel permutation; no new search)"} for report in runtime.reports]
    quantized = copy.deepcopy(fp32)
    apply_runtime_transforms_(quantized, records)
    return RuntimeModel(encoder=quantized, fp32=fp32, runtime_records=records, reports=reports)


def _int8_record_reordered(record: dict[str, Any], origins: dict[str, np.ndarray]) -> dict[str, Any]:
    data = dict(record["data"])
    data["input_scale_log2"] = {
        name: encode_exponents(decode_exponents(text)[torch.from_numpy(origins[name])]) if name in origins else text
        for name, text in data.get("input_scale_log2", {}).items()}
    if "fp32_channels" in data:  # channel c moved to the position whose origin is c
        data["fp32_channels"] = {
            name: np.flatnonzero(np.isin(origins[name], channels)).tolist() if name in origins else channels
            for name, channels in data["fp32_channels"].items()}
    return {**record, "data": data}


def applied_record(config: BaseModel) -> dict[str, Any]:
    return TransformRecord.from_config(config).to_dict()
