"""int8: the int8 Linear kernel (error bound, shapes, edge cases), scope resolution, the smoothing + fp32-exception
search, optimize_ registration."""

from __future__ import annotations

import copy

import pytest
import torch

from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import Int8Config
from icd.transforms.int8 import (
    int8_linear,
    linear_names,
    per_token_names,
    prepare_int8_runtime,
    quantize_linears_,
    quantized_names,
    resolve_scope,
)
from icd.transforms.int8_kernels import DynamicInt8Linear, default_reduce_range, vnni_supported
from icd.transforms.runtime import apply_runtime_transforms_
from icd.transforms.smoothing import InputScaled, scale_of, smooth_linear_input_
from tests.model.tiny import tiny_encoder

# ------------------------------------------------------------------------------------------------ the kernel


def _linear(k: int, n: int, bias: bool = True, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    linear = torch.nn.Linear(k, n, bias=bias)
    if bias:
        with torch.no_grad():
            linear.bias.uniform_(-3.0, 3.0)  # large enough that a lost or doubly-scaled bias breaks the bound
    return linear


def _error_bound(
    linear: torch.nn.Linear, x: torch.Tensor, per_token: bool, per_channel: bool, bits: int
) -> torch.Tensor:
    """Worst-case |y_int8 - y_fp32| per output element from the quantizers' step sizes.

    Weights: symmetric int8, step ``absmax / 127.5`` (per output channel or per tensor), rounding error <= step / 2.
    Activations: affine uint8 over [min, max] (0 included) of the (row-normalised, if per token) input, step
    ``range / (2**bits - 1)``; a full step is allowed for the zero-point rounding at the range ends.
    ``|dy| <= sum_j |x_j| dW + sum_j (|W_j| + dW) dx``.
    """
    w = linear.weight.detach().double()
    x2 = x.detach().double().reshape(-1, x.shape[-1])
    wmax = w.abs().amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    dw = wmax / 127.5 / 2
    levels = 2 ** bits - 1
    if per_token:
        absmax = x2.abs().amax(dim=1)
        rows = x2 / absmax.clamp_min(1e-12)[:, None]
        spread = rows.max().clamp_min(0) - rows.min().clamp_max(0)
        dx = absmax * spread / levels
    else:
        dx = (x2.max().clamp_min(0) - x2.min().clamp_max(0)).expand(x2.shape[0]) / levels
    w_sum = w.abs().sum(dim=1) + dw * w.shape[1]
    bound = x2.abs().sum(dim=1, keepdim=True) * dw[None, :] + dx[:, None] * w_sum[None, :]
    return bound.reshape(*x.shape[:-1], w.shape[0])


@pytest.mark.parametrize(("per_token", "per_channel"), [(True, True), (False, True), (False, False)])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_int8_linear_within_quantization_error_bound(per_token, per_channel, reduce_range):
    linear = _linear(96, 40)
    x = torch.randn(3, 7, 96, generator=torch.Generator().manual_seed(1))
    x[:, :, 5] *= 20.0  # an outlier channel
    x[1, 2] *= 50.0  # an outlier token
    qlinear = DynamicInt8Linear(linear, per_token=per_token, per_channel=per_channel, reduce_range=reduce_range)
    with torch.inference_mode():
        got, want = qlinear(x), linear(x)
    bound = _error_bound(linear, x, per_token, per_channel, 7 if reduce_range else 8)
    assert got.shape == (3, 7, 40) and got.dtype == torch.float32
    assert bool(((got - want).abs().double() <= bound * 1.001 + 1e-5).all())


def test_per_token_scales_protect_ordinary_tokens_from_an_outlier_token():
    linear = _linear(64, 32)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    x[0] *= 100.0
    with torch.inference_mode():
        want = linear(x)[1:]
        errors = {pt: float((DynamicInt8Linear(linear, per_token=pt)(x)[1:] - want).norm() / want.norm())
                  for pt in (True, False)}
    assert errors[True] < errors[False] / 10


@pytest.mark.parametrize("per_token", [True, False])
def test_int8_linear_bias_none_zero_rows_and_tiny_shapes(per_token):
    for k, n, shape in [(1, 1, (1, 1, 1)), (3, 2, (1, 3)), (8, 5, (2, 1, 8)), (16, 8, (4, 16))]:
        for bias in (True, False):
            linear = _linear(k, n, bias=bias)
            qlinear = DynamicInt8Linear(linear, per_token=per_token)
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(k))
            with torch.inference_mode():
                got = qlinear(x)
                zeros = qlinear(torch.zeros(*shape))
            assert got.shape == (*shape[:-1], n) and got.dtype == torch.float32
            assert torch.isfinite(got).all()
            expected_zero = linear.bias.detach().expand_as(zeros) if bias else torch.zeros_like(zeros)
            torch.testing.assert_close(zeros, expected_zero, rtol=0, atol=1e-6)  # a zero row: no NaN, just the bias
    mixed = torch.randn(2, 3, 16)
    mixed[1, 1] = 0.0
    qlinear = DynamicInt8Linear(_linear(16, 8), per_token=per_token)
    with torch.inference_mode():
        out = qlinear(mixed)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1, 1], qlinear.packed.bias() if not per_token else qlinear.bias, rtol=0, atol=1e-6)


@pytest.mark.parametrize("per_token", [True, False])
def test_int8_linear_input_scale_is_the_smoothing_multiply(per_token):
    linear = _linear(32, 16)
    inv_scale = scale_of(torch.randint(-3, 4, (32,), generator=torch.Generator().manual_seed(4), dtype=torch.int8))
    x = torch.randn(2, 5, 32)
    fused = DynamicInt8Linear(linear, per_token=per_token, inv_scale=inv_scale)
    plain = DynamicInt8Linear(linear, per_token=per_token)
    with torch.inference_mode():
        before = x.clone()
        torch.testing.assert_close(fused(x), plain(x * inv_scale), rtol=0, atol=0)
    assert torch.equal(x, before)  # the caller's input is never modified in place


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_traces_shape_generic_and_runs_with_grad_enabled(bias):
    qlinear = DynamicInt8Linear(_linear(32, 16, bias=bias), per_token=True, inv_scale=torch.full((32,), 0.5))
    with torch.no_grad():  # as icd.export.torchscript traces
        traced = torch.jit.trace(qlinear, (torch.randn(2, 3, 32),), check_trace=False)
    other = torch.randn(5, 11, 32, requires_grad=True)  # a caller that forgot no_grad: no in-place autograd error
    with torch.inference_mode():
        expected = qlinear(other.detach())
    torch.testing.assert_close(traced(other), expected, rtol=0, atol=0)
    torch.testing.assert_close(qlinear(other), expected, rtol=0, atol=0)


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize("smoothed", [True, False])
def test_fp32_channels_are_exact_and_take_the_outliers_out_of_the_int8_range(per_token, smoothed):
    linear = _linear(48, 24)
    inv_scale = scale_of(torch.randint(-2, 3, (48,), generator=torch.Generator().manual_seed(5),
                                       dtype=torch.int8)) if smoothed else None
    x = torch.randn(3, 7, 48, generator=torch.Generator().manual_seed(6))
    x[..., 9] *= 60.0  # an outlier channel
    with torch.inference_mode():
        want = linear(x) if inv_scale is None else linear(x * inv_scale)  # the smoothed Linear's function
        every = DynamicInt8Linear(linear, per_token=per_token, inv_scale=inv_scale, fp32_channels=torch.arange(48))
        torch.testing.assert_close(every(x), want, rtol=1e-5, atol=1e-4)  # every channel fp32: the fp32 Linear
        errors = {}
        for name, channels in (("none", None), ("outlier", torch.tensor([9]))):
            before = x.clone()
            got = DynamicInt8Linear(linear, per_token=per_token, inv_scale=inv_scale, fp32_channels=channels)(x)
            assert torch.equal(x, before)  # the caller's input is not changed
            errors[name] = float((got - want).norm() / want.norm())
    assert errors["outlier"] < errors["none"] / 4
    qlinear = DynamicInt8Linear(linear, per_token=per_token, inv_scale=inv_scale, fp32_channels=torch.tensor([9, 2]))
    assert qlinear.fp32_channels.tolist() == [2, 9] and "fp32_channels=2" in repr(qlinear)
    with torch.no_grad():
        traced = torch.jit.trace(qlinear, (torch.randn(2, 3, 48),), check_trace=False)
    with torch.inference_mode():
        torch.testing.assert_close(traced(x[:, :5]), qlinear(x[:, :5]), rtol=0, atol=0)


def test_int8_linear_rejects_bad_arguments():
    for bad in (torch.tensor([8]), torch.tensor([-1]), torch.tensor([1, 1])):
        with pytest.raises(ValueError, match="fp32_channels"):
            DynamicInt8Linear(_linear(8, 4), per_token=True, fp32_channels=bad)
    with pytest.raises(TypeError, match="nn.Linear"):
        DynamicInt8Linear(torch.nn.Conv1d(2, 2, 1), per_token=True)
    with pytest.raises(ValueError, match="inv_scale"):
        DynamicInt8Linear(_linear(8, 4), per_token=True, inv_scale=torch.ones(7))
    with pytest.raises(ValueError, match="engine"):
        DynamicInt8Linear(_linear(8, 4), per_token=True, engine="no-such-engine")
    with pytest.raises(ValueError, match="per_token"):
        int8_linear(_linear(8, 4), "per_channel", per_token=True)


def test_reduce_range_default_follows_vnni():
    assert default_reduce_range() is (not vnni_supported())


# ------------------------------------------------------------------------------------------------ the model level


def test_scope_resolution():
    enc = tiny_encoder()
    assert len(resolve_scope(enc, "all")) == 12
    assert len(resolve_scope(enc, "ffn")) == 4
    assert all("attention" in n for n in resolve_scope(enc, "attention")) and len(resolve_scope(enc, "attention")) == 8
    assert len(resolve_scope(enc, r"layer\.0\.")) == 6
    assert [n.rsplit(".", 2)[-2] for n in resolve_scope(enc, "ffn_out")] == ["output", "output"]
    assert all(n.endswith("intermediate.dense") for n in resolve_scope(enc, "ffn_in"))
    assert len(resolve_scope(enc, "all", keep_fp32=[r"output\.dense$"])) == 8
    with pytest.raises(ValueError, match="regex"):
        resolve_scope(enc, "(")
    with pytest.raises(ValueError, match="selects no Linear"):
        resolve_scope(enc, "nothing-matches")


@pytest.mark.parametrize("scheme", ["per_token", "per_channel", "per_tensor"])
@pytest.mark.parametrize("engine", ["onednn", "x86"])
def test_quantized_model_keeps_shape_and_dtype(batch, scheme, engine):
    enc = tiny_encoder()
    with torch.inference_mode():
        expected = enc(*batch)
    quantize_linears_(enc, linear_names(enc), scheme, engine, reduce_range=default_reduce_range())
    assert len(quantized_names(enc)) == 12
    assert len(per_token_names(enc)) == (12 if scheme == "per_token" else 0)
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
    assert type(enc.bert.get_submodule("encoder.layer.1.intermediate.dense")) is torch.nn.Linear  # nothing half-done
    with pytest.raises(ValueError, match="not quantized"):
        quantize_linears_(enc, ["encoder.layer.1.intermediate.dense"], "per_token",
                          per_token=["encoder.layer.1.output.dense"])
    with pytest.raises(ValueError, match="per_token"):
        quantize_linears_(enc, ["encoder.layer.1.intermediate.dense"], "per_channel",
                          per_token=["encoder.layer.1.intermediate.dense"])


def test_per_token_subset_and_smoothed_wrappers_become_one_module(batch):
    enc = tiny_encoder()
    names = linear_names(enc)
    smooth_linear_input_(enc.bert, names[0], torch.ones(64, dtype=torch.int8))
    quantize_linears_(enc, names, "per_token", per_token=names[:3])
    assert per_token_names(enc) == names[:3]
    assert not any(isinstance(m, InputScaled) for m in enc.modules())
    assert enc.bert.get_submodule(names[0]).inv_scale is not None
    with torch.inference_mode():
        assert torch.isfinite(enc(*batch)).all()


def test_search_keeps_fp32_function_and_reports_choices(batch, context):
    original = tiny_encoder()
    fp32 = copy.deepcopy(original)
    record, report = prepare_int8_runtime(fp32, Int8Config(search_texts=8, smooth_min_error=0.0, per_token_scope="all"),
                                          context)
    with torch.inference_mode():
        torch.testing.assert_close(fp32(*batch), original(*batch), rtol=1e-5, atol=1e-5)  # folds preserve fp32
    assert record["data"]["quantized"] == sorted(linear_names(original))
    assert record["data"]["qscheme"] == "per_token" and record["data"]["per_token"] == record["data"]["quantized"]
    assert record["data"]["reduce_range"] is default_reduce_range()
    assert report["per_token"] == record["data"]["quantized"] and report["activation_bits"] in (7, 8)
    assert len(report["smoothing"]) == 12
    for choice in report["smoothing"]:
        assert choice["rel_output_error_int8_chosen"] <= choice["rel_output_error_int8_plain"]
    assert set(record["data"]["input_scale_log2"]) <= set(record["data"]["quantized"])
    assert 0.0 < report["calibration_cos_mean"] <= 1.0 + 1e-9
    model = copy.deepcopy(fp32)
    apply_runtime_transforms_(model, [record])
    assert len(quantized_names(model)) == 12 and len(per_token_names(model)) == 12


def test_activation_ranges_count_only_real_tokens_and_equal_the_calibration(context):
    from icd.calibrate import calibrate
    from icd.measure.encode import Batch
    from icd.transforms.int8 import _activation_ranges, _input_absmax

    enc = tiny_encoder()
    names = linear_names(enc)
    batches = context.calibration_batches()
    assert any(bool((b.attention_mask == 0).any()) for b in batches)  # padding present: the mask matters
    measured = _input_absmax(enc, names, batches)
    stats = calibrate(enc, context.tokenizer, context.calibration_texts, 4, context.max_length, progress=False)
    for name in names:  # calibration batches differently (shortest first): equal up to rounding
        torch.testing.assert_close(measured[name], torch.from_numpy(stats.inputs[name].absmax).float(),
                                   rtol=1e-5, atol=1e-6)
    with_stats = TransformContext(tokenizer=context.tokenizer, calibration_texts=context.calibration_texts,
                                  batch_size=context.batch_size, max_length=context.max_length, stats=stats)
    taken, _ = _activation_ranges(enc, names, with_stats)
    assert all(torch.equal(taken[n], torch.from_numpy(stats.inputs[n].absmax).float()) for n in names)
    # a padded position's activations are not counted: blow one up and the range stays
    ids, mask = batches[0].input_ids.clone(), batches[0].attention_mask
    row, col = (mask == 0).nonzero()[0].tolist()
    ids[row, col] = int(ids.max())
    again = _input_absmax(enc, names, [Batch(ids, mask), *batches[1:]])
    assert all(torch.equal(again[n], measured[n]) for n in names)


def test_smoothing_ranges_include_the_padded_rows_a_per_call_kernel_sees(context):
    """Real-token ranges alone let a padded row's wide channel become an outlier of the kernel's per-call range
    (the regression of 57864a4, docs/int8.md): the search widens them by every row of its padded batches."""
    from icd.measure.encode import Batch
    from icd.transforms.int8 import _activation_ranges, _input_absmax, _kernel_ranges

    enc = tiny_encoder()
    names = linear_names(enc)
    batches = context.calibration_batches()
    real, _ = _activation_ranges(enc, names, context)
    widened, how, reference = _kernel_ranges(enc, names, context, batches[:1])
    padded = _input_absmax(enc, names, batches[:1], padded_rows=True)
    assert "padded rows" in how
    with torch.inference_mode():  # the same pass gives the search's fp32 reference
        torch.testing.assert_close(reference, enc(batches[0].input_ids, batches[0].attention_mask), rtol=0, atol=0)
    for name in names:
        torch.testing.assert_close(widened[name], torch.maximum(real[name], padded[name]))
    # a padded position with a different token changes what the kernel sees, so the widened ranges move
    ids, mask = batches[0].input_ids.clone(), batches[0].attention_mask
    row, col = (mask == 0).nonzero()[0].tolist()
    ids[row, col] = int(ids.max())
    moved, _, _ = _kernel_ranges(enc, names, context, [Batch(ids, mask)])
    assert any(not torch.equal(moved[n], widened[n]) for n in names)
    assert all(bool((moved[n] >= real[n]).all()) for n in names)


def test_search_with_calibration_stats_makes_the_same_choices(context):
    from icd.calibrate import calibrate

    config = Int8Config(search_texts=8, alpha_grid=[0.5, 0.85])
    plain_fp32, stats_fp32 = tiny_encoder(), tiny_encoder()
    stats = calibrate(stats_fp32, context.tokenizer, context.calibration_texts, context.batch_size,
                      context.max_length, progress=False)
    record, report = prepare_int8_runtime(plain_fp32, config, context)
    with_stats = TransformContext(tokenizer=context.tokenizer, calibration_texts=context.calibration_texts,
                                  batch_size=context.batch_size, max_length=context.max_length, stats=stats)
    record_s, report_s = prepare_int8_runtime(stats_fp32, config, with_stats)
    assert record_s["data"]["quantized"] == record["data"]["quantized"]
    assert [c["alpha"] for c in report_s["smoothing"]] == [c["alpha"] for c in report["smoothing"]]
    assert report_s["calibration_cos_mean"] == pytest.approx(report["calibration_cos_mean"], abs=1e-6)


def test_per_token_scope_and_per_channel_search(context):
    record, report = prepare_int8_runtime(tiny_encoder(), Int8Config(search_texts=8, alpha_grid=[0.5]), context)
    # the default per_token_scope: the FFN output Linears
    assert record["data"]["per_token"] == sorted(n for n in record["data"]["quantized"] if n.endswith("output.dense")
                                                 and ".attention." not in n)
    assert len(report["per_token"]) == 2
    record, report = prepare_int8_runtime(tiny_encoder(), Int8Config(search_texts=8, qscheme="per_channel",
                                                                     reduce_range=True, alpha_grid=[0.5]), context)
    assert "per_token" not in record["data"] and report["per_token"] == [] and report["activation_bits"] == 7
    with pytest.raises(ValueError, match="per_token_scope"):
        prepare_int8_runtime(tiny_encoder(), Int8Config(per_token_scope="no-such-linear"), None)


def test_per_token_max_keeps_the_linears_where_per_token_helps_most(context):
    config = Int8Config(search_texts=8, alpha_grid=[0.5], per_token_scope="all", per_token_max=1)
    record, report = prepare_int8_runtime(tiny_encoder(), config, context)
    selection = report["per_token_selection"]
    assert len(selection) == len(record["data"]["quantized"]) and sum(row["chosen"] for row in selection) == 1
    gains = {row["name"]: row["rel_output_error_per_call"] - row["rel_output_error_per_token"] for row in selection}
    assert report["per_token"] == record["data"]["per_token"] == [max(gains, key=gains.__getitem__)]
    record, report = prepare_int8_runtime(tiny_encoder(), config.model_copy(update={"per_token_max": 0}), context)
    assert report["per_token"] == [] and not record["data"].get("per_token")


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


def test_outlier_channels_search_records_and_replays_them(batch, context):
    from icd.errors import ArtefactError

    fp32 = tiny_encoder()
    record, report = prepare_int8_runtime(fp32, Int8Config(search_texts=8, alpha_grid=[0.5], outlier_channels=3),
                                          context)
    channels = record["data"]["fp32_channels"]
    assert sorted(channels) == record["data"]["quantized"]
    assert all(len(c) == 3 and c == sorted(set(c)) for c in channels.values())
    assert report["fp32_channels"]["per_linear"] == 3
    model = copy.deepcopy(fp32)
    apply_runtime_transforms_(model, [record])
    modules = dict(model.bert.named_modules())
    assert all(modules[n].fp32_channels.tolist() == c for n, c in channels.items())
    with torch.inference_mode():
        assert torch.isfinite(model(*batch)).all()
    plain, _ = prepare_int8_runtime(tiny_encoder(), Int8Config(search_texts=8, alpha_grid=[0.5]), context)
    assert "fp32_channels" not in plain["data"]  # records without them are unchanged
    broken = copy.deepcopy(record)
    broken["data"]["fp32_channels"] = {record["data"]["quantized"][0]: ["x"]}
    with pytest.raises(ArtefactError, match="fp32_channels"):
        apply_runtime_transforms_(copy.deepcopy(fp32), [broken])
    broken["data"]["fp32_channels"] = {record["data"]["quantized"][0]: [10 ** 6]}
    with pytest.raises(ArtefactError, match="fp32_channels"):
        apply_runtime_transforms_(copy.deepcopy(fp32), [broken])


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
    with pytest.raises(ValueError, match="per_token_scope"):
        Int8Config(per_token_scope="(")
    with pytest.raises(ValueError):
        Int8Config(qscheme="per_row")
    default = Int8Config()
    assert default.qscheme == "per_token" and default.per_token_scope == "ffn_out" and default.reduce_range is None
