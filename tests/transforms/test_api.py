"""The transform API: registry, errors, provenance records, context."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel
from torch import nn

from icd.transforms.api import (
    TransformContext,
    TransformRecord,
    optimize_,
    register_transform,
    registered_names,
)
from icd.transforms.configs import NMSparsityConfig


class _ScaleConfig(BaseModel):
    type: Literal["test_scale"] = "test_scale"
    version: int = 3
    factor: float = 2.0


@register_transform(_ScaleConfig)
def _scale(module: nn.Module, config: _ScaleConfig, context: TransformContext | None) -> dict[str, float]:
    for p in module.parameters():
        p.data.mul_(config.factor)
    return {"factor": config.factor}


class _Unregistered(BaseModel):
    type: Literal["nope"] = "nope"


def test_optimize_applies_in_place_returns_none_and_logs_record():
    lin = nn.Linear(2, 2)
    before = lin.weight.detach().clone()
    ctx = TransformContext()
    assert optimize_(lin, _ScaleConfig(factor=3.0), ctx) is None
    assert (lin.weight.detach() == before * 3.0).all()
    applied = ctx.applied[-1]
    assert applied.record.to_dict() == {"type": "test_scale", "version": 3, "data": {"factor": 3.0}}
    assert applied.result == {"factor": 3.0}


def test_unknown_config_type_error_lists_registered():
    with pytest.raises(TypeError, match="_Unregistered") as info:
        optimize_(nn.Linear(2, 2), _Unregistered())
    assert "nm_sparsity" in str(info.value) and "test_scale" in str(info.value)
    assert "nm_sparsity" in registered_names()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n": 4, "m": 4}, "m"), ({"n": 0}, "n"), ({"m": 1}, "m"), ({"scope": "("}, "scope"), ({"blocksize": 0}, "blocksize")],
)
def test_invalid_nm_config_raises_value_error_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        NMSparsityConfig(**kwargs)


def test_version_1_nm_record_rebuilds_as_it_ran():
    old = TransformRecord.from_dict({"type": "nm_sparsity", "version": 1,
                                     "data": {"n": 2, "m": 4, "scope": "all", "method": "sparsegpt"}})
    config = old.to_config()
    assert config.version == 1 and config.refit is False and config.bias_correction is False
    assert config.residual_feedback is False and config.layernorm_correction is False and config.mask_rounds == 0
    assert NMSparsityConfig().refit is True and NMSparsityConfig().version == 2


def test_record_round_trip_rebuilds_config():
    config = NMSparsityConfig(n=1, m=4, scope="attention", method="wanda")
    record = TransformRecord.from_config(config)
    assert record.type == "nm_sparsity" and record.version == 2
    assert record.data["n"] == 1 and "type" not in record.data
    again = TransformRecord.from_dict(record.to_dict())
    assert again == record
    assert again.to_config() == config


def test_record_errors():
    with pytest.raises(ValueError, match="data"):
        TransformRecord.from_dict({"type": "nm_sparsity", "version": 1})
    with pytest.raises(TypeError, match="unknown type 'zzz'"):
        TransformRecord("zzz", 1, {}).to_config()


def test_context_without_data_refuses_calibration_batches():
    ctx = TransformContext()
    assert not ctx.has_calibration_data
    with pytest.raises(ValueError, match="calibration"):
        ctx.calibration_batches()


def test_context_tokenizes_texts_once(minilm_tokenizer):
    ctx = TransformContext(tokenizer=minilm_tokenizer, calibration_texts=["one text", "a second, longer text"],
                           batch_size=1, max_length=8)
    batches = ctx.calibration_batches()
    assert len(batches) == 2 and ctx.calibration_batches() is batches
    assert batches[1].input_ids.shape[1] <= 8
