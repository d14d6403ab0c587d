"""int8: scope resolution, shape/dtype contracts, the smoothing + fp32-exception search, optimize_ registration."""

from __future__ import annotations

import copy

import pytest
import torch

from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import Int8Config
from icd.transforms.int8 import (
    linear_names,
    prepare_int8_runtime,
    quantize_linears_,
    quantized_names,
    resolve_scope,
)
from icd.transforms.runtime import apply_runtime_transforms_
from tests.model.tiny import tiny_encoder


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (4, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return ids, mask


@pytest.fixture
def context(minilm_tokenizer, corpus_split):
    return TransformContext(tokenizer=minilm_tokenizer, calibration_texts=corpus_split.calibration[:16], batch_size=8,
                            max_length=32)


def test_scope_resolution():
    enc = tiny_encoder()
    assert len(resolve_scope(enc, "all")) == 12
    assert len(resolve_scope(enc, "ffn")) == 4
    assert all("attention" in n for n in resolve_scope(enc, "attention")) and len(resolve_scope(enc, "attention")) == 8
    assert len(resolve_scope(enc, r"layer\.0\.")) == 6
    assert len(resolve_scope(enc, "all", keep_fp32=[r"output\.dense$"])) == 8
    with pytest.raises(ValueError, match="regex"):
        resolve_scope(enc, "(")
    with pytest.raises(ValueError, match="selects no Linear"):
        resolve_scope(enc, "nothing-matches")


@pytest.mark.parametrize("scheme", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("engine", ["onednn", "x86"])
def test_quantized_model_keeps_shape_and_dtype(batch, scheme, engine):
    enc = tiny_encoder()
    with torch.inference_mode():
        expected = enc(*batch)
    quantize_linears_(enc, linear_names(enc), scheme, engine)
    assert len(quantized_names(enc)) == 12
    with torch.inference_mode():
        got = enc(*batch)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.9


def test_quantize_rejects_unknown_or_repeated_names():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match="not an fp32"):
        quantize_linears_(enc, ["encoder.layer.9.intermediate.dense"])
    quantize_linears_(enc, ["encoder.layer.0.intermediate.dense"])
    with pytest.raises(ValueError, match="not an fp32"):
        quantize_linears_(enc, ["encoder.layer.0.intermediate.dense"])
    with pytest.raises(ValueError, match="engine"):
        quantize_linears_(enc, ["encoder.layer.1.intermediate.dense"], engine="no-such-engine")


def test_search_keeps_fp32_function_and_reports_choices(batch, context):
    original = tiny_encoder()
    fp32 = copy.deepcopy(original)
    record, report = prepare_int8_runtime(fp32, Int8Config(search_texts=8, smooth_min_error=0.0), context)
    with torch.inference_mode():
        torch.testing.assert_close(fp32(*batch), original(*batch), rtol=1e-5, atol=1e-5)  # folds preserve fp32
    assert record["data"]["quantized"] == sorted(linear_names(original))
    assert len(report["smoothing"]) == 12
    for choice in report["smoothing"]:
        assert choice["rel_output_error_int8_chosen"] <= choice["rel_output_error_int8_plain"]
    assert set(record["data"]["input_scale_log2"]) <= set(record["data"]["quantized"])
    assert 0.0 < report["calibration_cos_mean"] <= 1.0 + 1e-9
    model = copy.deepcopy(fp32)
    apply_runtime_transforms_(model, [record])
    assert len(quantized_names(model)) == 12


def test_keep_fp32_and_auto_keep_report_reasons(context):
    fp32 = tiny_encoder()
    config = Int8Config(search_texts=8, keep_fp32=[r"layer\.1\.intermediate"], auto_keep_fp32=2, cos_target=1.0)
    record, report = prepare_int8_runtime(fp32, config, context)
    kept = {k["name"]: k["reason"] for k in report["kept_fp32"]}
    assert "encoder.layer.1.intermediate.dense" in kept
    assert len(kept) == 3  # the regex one + exactly auto_keep_fp32 measured ones (target 1.0 is never reached)
    measured = [name for name, reason in kept.items() if "most sensitive" in reason]
    assert len(measured) == 2
    assert all(name in report["sensitivity_cos_drop_alone"] for name in measured)
    assert not set(kept) & set(record["data"]["quantized"])
    assert report["quantized"] == 9


def test_without_calibration_data_nothing_is_data_aware():
    fp32 = tiny_encoder()
    record, report = prepare_int8_runtime(fp32, Int8Config(auto_keep_fp32=3), None)
    assert record["data"]["input_scale_log2"] == {}
    assert len(record["data"]["quantized"]) == 12
    assert "no calibration data" in report["note"]


def test_optimize_dispatches_int8(context):
    enc = tiny_encoder()
    optimize_(enc, Int8Config(search_texts=8), context)
    assert len(quantized_names(enc)) == 12
    assert context.applied[-1].record.type == "int8"
    assert context.applied[-1].result["record"]["type"] == "int8"


def test_config_validation():
    with pytest.raises(ValueError, match="alpha_grid"):
        Int8Config(alpha_grid=[1.5])
    with pytest.raises(ValueError):
        Int8Config(engine="tpu")
