"""GPTQ weight rounding for int8 (icd/transforms/int8_rounding.py): the solver lowers the output error it minimises,
its codes are packed as they are, the fp32 model keeps its function, and the codes travel through save / load."""

from __future__ import annotations

import copy

import pytest
import torch

from icd.calibrate.gram import collect_grams
from icd.errors import ArtefactError
from icd.pipeline.stages.transform import RuntimeModel, carry_runtime_model
from icd.transforms.configs import Int8Config
from icd.transforms.int8 import linear_names, prepare_int8_runtime, quantized_names
from icd.transforms.int8_kernels import DynamicInt8Linear
from icd.transforms.int8_rounding import (
    CODE_MAX,
    gptq_codes,
    kernel_hessian,
    kernel_weight,
    output_errors,
    round_nearest,
    row_scales,
)
from icd.transforms.runtime import INT8_WEIGHTS_FILE, apply_runtime_transforms_
from tests.model.tiny import tiny_encoder


def _correlated_inputs(tokens: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated channels and a few wide ones (what makes GPTQ's compensation pay)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=gen, dtype=torch.float64) / width ** 0.5
    x = torch.randn(tokens, width, generator=gen, dtype=torch.float64) @ (torch.eye(width, dtype=torch.float64) + mix)
    x[:, :3] *= 8.0
    return x


def test_gptq_lowers_the_output_error_it_minimises():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(48, 96, generator=gen)
    x = _correlated_inputs(2000, 96)
    hessian = x.T @ x / x.shape[0]
    codes, scales = gptq_codes(weight, hessian)
    nearest, gptq = output_errors(weight, hessian, [round_nearest(weight), (codes, scales)])
    assert gptq < 0.7 * nearest
    direct = ((x @ (weight.double() - codes.double() * scales.double()[:, None]).T) ** 2).sum()
    assert float(direct / ((x @ weight.double().T) ** 2).sum()) == pytest.approx(gptq, rel=1e-6)


def test_zero_weights_stay_zero_so_a_2_of_4_pattern_survives():
    from icd.transforms.nm_sparsity import is_nm, magnitude_prune

    gen = torch.Generator().manual_seed(4)
    weight = magnitude_prune(torch.randn(32, 64, generator=gen), 2, 4)
    x = _correlated_inputs(1500, 64)
    codes, scales = gptq_codes(weight, x.T @ x / x.shape[0])
    assert is_nm(codes.float() * scales[:, None], 2, 4)
    assert bool((codes[weight == 0] == 0).all())


def test_grid_is_symmetric_per_row_and_zero_rows_and_dead_columns_give_zero_codes():
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.5]])
    codes, scales = round_nearest(weight)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert scales.tolist() == pytest.approx([1.0 / CODE_MAX, 1.0, 2.0 / CODE_MAX])
    assert codes[0, 1] == -CODE_MAX and codes[2, 0] == CODE_MAX and codes[1].abs().sum() == 0
    hessian = torch.diag(torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64))  # input 1 is always zero
    codes, _ = gptq_codes(weight, hessian)
    assert codes[:, 1].abs().sum() == 0
    assert int(codes.abs().max()) <= CODE_MAX
    assert torch.equal(row_scales(weight), scales)
    with pytest.raises(ValueError, match="does not match"):
        gptq_codes(weight, torch.eye(4))


def test_kernel_units_preserve_the_product():
    gen = torch.Generator().manual_seed(2)
    weight, x = torch.randn(8, 16, generator=gen), torch.randn(50, 16, generator=gen, dtype=torch.float64)
    exponents = torch.randint(-3, 4, (16,), generator=gen, dtype=torch.int8)
    channels = torch.tensor([2, 9])
    multiplier = torch.pow(2.0, -exponents.double())
    multiplier[channels] = 0.0
    seen = x * multiplier
    torch.testing.assert_close(kernel_hessian(x.T @ x, exponents, channels), seen.T @ seen)
    kept = torch.ones(16, dtype=torch.bool)
    kept[channels] = False
    torch.testing.assert_close(seen @ kernel_weight(weight, exponents, channels).double().T,
                               x[:, kept] @ weight.double()[:, kept].T)


def test_codes_are_packed_as_they_are():
    gen = torch.Generator().manual_seed(3)
    linear = torch.nn.Linear(32, 16)
    codes = torch.randint(-CODE_MAX, CODE_MAX + 1, (16, 32), generator=gen, dtype=torch.int8)
    scales = torch.rand(16, generator=gen) * 0.01 + 1e-3
    module = DynamicInt8Linear(linear, per_token=True, weight_codes=(codes, scales))
    weight, _ = module.packed._packed_params._weight_bias()
    assert torch.equal(weight.int_repr(), codes)
    torch.testing.assert_close(weight.q_per_channel_scales().float(), scales)
    assert "weight_rounding=icd codes" in repr(module)
    with pytest.raises(ValueError, match="per-channel"):
        DynamicInt8Linear(linear, per_token=False, per_channel=False, weight_codes=(codes, scales))


def test_gptq_needs_channel_scales():
    with pytest.raises(ValueError, match="weight_rounding='gptq' needs per-channel"):
        Int8Config(weight_rounding="gptq", qscheme="per_tensor")
    assert Int8Config().weight_rounding == "nearest"


CONFIG = Int8Config(search_texts=8, alpha_grid=[0.5], per_token_scope="all", outlier_channels=2,
                    weight_rounding="gptq")


def _prepared(context):
    original = tiny_encoder()
    fp32 = copy.deepcopy(original)
    record, report = prepare_int8_runtime(fp32, CONFIG, context)
    return original, fp32, record, report


def test_search_rounds_with_gptq_and_keeps_the_fp32_function(batch, context):
    original, fp32, record, report = _prepared(context)
    with torch.inference_mode():
        torch.testing.assert_close(fp32(*batch), original(*batch), rtol=1e-5, atol=1e-5)
    assert record["data"]["weight_rounding"] == "gptq"
    assert sorted(fp32.int8_weights) == record["data"]["quantized"] == sorted(linear_names(original))
    rounding = report["weight_rounding"]
    assert rounding["method"] == "gptq" and rounding["tokens"] > 0 and len(rounding["layers"]) == 12
    assert rounding["rel_output_error_gptq_mean"] < rounding["rel_output_error_nearest_mean"]
    assert 0.0 < report["calibration_cos_mean_gptq"] <= 1.0 + 1e-9
    model = copy.deepcopy(fp32)
    apply_runtime_transforms_(model, [record])
    modules = dict(model.bert.named_modules())
    for name in quantized_names(model):
        weight, _ = modules[name].packed._packed_params._weight_bias()
        assert torch.equal(weight.int_repr(), fp32.int8_weights[name][0])
    plain, _ = prepare_int8_runtime(tiny_encoder(), Int8Config(search_texts=8, alpha_grid=[0.5]), context)
    assert "weight_rounding" not in plain["data"]  # records of nearest rounding are unchanged


def test_gptq_from_calibration_stats_equals_gptq_from_a_pass(context):
    from icd.calibrate.collector import StatsCollector
    from icd.transforms.api import TransformContext

    fp32 = tiny_encoder()
    names = linear_names(fp32)
    collector = StatsCollector(fp32, linears=names)
    collector.attach()
    try:
        with torch.inference_mode():
            for b in context.calibration_batches():
                collector.begin_batch(b.attention_mask)
                fp32(b.input_ids, b.attention_mask)
                collector.end_batch()
    finally:
        collector.detach()
    with_stats = TransformContext(tokenizer=context.tokenizer, calibration_texts=context.calibration_texts,
                                  batch_size=context.batch_size, max_length=context.max_length, stats=collector.stats)
    a, b = copy.deepcopy(fp32), copy.deepcopy(fp32)
    _, report_a = prepare_int8_runtime(a, CONFIG, context)
    _, report_b = prepare_int8_runtime(b, CONFIG, with_stats)
    assert report_b["weight_rounding"]["hessians"] == "the calibration statistics of this model"
    for name in a.int8_weights:
        assert (a.int8_weights[name][0].int() - b.int8_weights[name][0].int()).abs().max() <= 1, name
    grams = collect_grams(a, names, context.calibration_batches())
    assert all(g.count > 0 for g in grams.values())


def test_hessians_from_statistics_follow_a_v_to_o_fold(context):
    """The statistics predate the search's V->O folds; the Gram of a folded O's input must be the folded model's."""
    from icd.calibrate.run import calibrate
    from icd.transforms.api import TransformContext
    from icd.transforms.int8 import SmoothingChoice, _linear_grams, _value_of_attention_output
    from icd.transforms.smoothing import fold_value_output_scale_

    fp32 = tiny_encoder()
    stats = calibrate(fp32, context.tokenizer, context.calibration_texts, 8, 32, progress=False)
    output, value = next(iter(_value_of_attention_output(fp32).items()))
    modules = dict(fp32.bert.named_modules())
    exponents = torch.randint(-3, 4, (modules[output].in_features,), generator=torch.Generator().manual_seed(5),
                              dtype=torch.int8)
    fold_value_output_scale_(modules[value], modules[output], exponents)
    choice = SmoothingChoice(output, 0.5, exponents, 0.0, 0.0, folded=True)
    with_stats = TransformContext(tokenizer=context.tokenizer, calibration_texts=context.calibration_texts,
                                  batch_size=8, max_length=32, stats=stats)
    from_stats, source = _linear_grams(fp32, [output], with_stats, [choice])
    assert source == "the calibration statistics of this model"
    measured = collect_grams(fp32, [output], context.calibration_batches())[output]
    torch.testing.assert_close(from_stats[output].hessian, measured.hessian, rtol=1e-4, atol=1e-6)


def test_codes_survive_save_and_load_and_a_missing_file_is_named(tmp_path, batch, context,
                                                                    minilm_tokenizer):
    from icd.config.schema import ModelSection
    from icd.pipeline.model_store import load_run_encoder, save_run_encoder

    _, fp32, record, _ = _prepared(context)
    in_memory = copy.deepcopy(fp32)
    apply_runtime_transforms_(in_memory, [record])
    folder = save_run_encoder(tmp_path, fp32, minilm_tokenizer, ModelSection(), [record])
    assert (folder / INT8_WEIGHTS_FILE).is_file()
    loaded = load_run_encoder(folder)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*batch), in_memory(*batch), rtol=1e-5, atol=1e-5)
    (folder / INT8_WEIGHTS_FILE).unlink()
    with pytest.raises(ArtefactError, match=INT8_WEIGHTS_FILE):
        load_run_encoder(folder)
    (folder / INT8_WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ArtefactError, match="not a readable safetensors"):
        load_run_encoder(folder)
    broken = copy.deepcopy(record)
    broken["data"]["weight_rounding"] = "stochastic"
    with pytest.raises(ArtefactError, match="weight_rounding 'stochastic'"):
        apply_runtime_transforms_(copy.deepcopy(fp32), [broken])


def test_gptq_records_are_rounded_anew_not_carried(context):
    _, fp32, record, report = _prepared(context)
    quantized = copy.deepcopy(fp32)
    apply_runtime_transforms_(quantized, [record])
    runtime = RuntimeModel(encoder=quantized, fp32=fp32, runtime_records=[record], reports=[report])
    assert carry_runtime_model(runtime, fp32, copy.deepcopy(fp32), {}) is None
