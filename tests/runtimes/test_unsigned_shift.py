"""The FFN output shift (icd.runtimes.unsigned_shift) preserves the function, keeps the shifted input non-negative on
real text, and makes NNCF's symmetric quantizer of it unsigned in the exported OpenVINO model."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.measure.encode import encode, tokenize
from icd.runtimes.openvino_int8 import RECIPES, OpenVinoInt8Recipe
from icd.runtimes.outlier_split import FfnReader, split_ffn_neurons_, widest_ffn_neurons
from icd.runtimes.unsigned_shift import (SHIFT_MARGIN, ShiftedInputLinear, activation_floor, ffn_out_shift,
                                         shift_ffn_out_inputs_)


def test_activation_floor_is_gelus_minimum_and_zero_for_relu():
    assert activation_floor(torch.nn.GELU()) == pytest.approx(-0.169971, abs=1e-6)
    assert activation_floor(torch.nn.GELU(approximate="tanh")) == pytest.approx(-0.17004, abs=1e-4)
    assert activation_floor(torch.nn.ReLU()) == 0.0
    assert activation_floor(torch.nn.Sigmoid()) == 0.0


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(0.0, 5.0), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_a_shifted_linear_computes_what_the_linear_did(shift, bias, seed):
    torch.manual_seed(seed)
    linear = torch.nn.Linear(24, 8, bias=bias).double()
    x = torch.randn(5, 24, dtype=torch.float64)
    expected = linear(x)
    shifted = ShiftedInputLinear(copy.deepcopy(linear), shift)
    assert torch.allclose(shifted(x), expected, atol=1e-9)
    assert shifted.linear.bias is not None


def _batches(tokenizer, texts):
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in tokenize(tokenizer, texts, 8, 128)]


def _inputs_of(model, modules, tokenizer, texts):
    """The inputs the shifted Linears see (after the shift) on ``texts``."""
    seen = []
    handles = [m.linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach())) for m in modules]
    try:
        encode(model, tokenizer, texts, 8, 128)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("split", [False, True])
def test_shifted_model_equals_the_original_and_its_ffn_out_inputs_are_not_negative(minilm_encoder, minilm_tokenizer,
                                                                                   corpus_split, split):
    """On real MiniLM text (held-out), plain and after the FFN neuron split (then only the int8 part is shifted)."""
    model = copy.deepcopy(minilm_encoder)
    if split:
        split_ffn_neurons_(model, widest_ffn_neurons(model, _batches(minilm_tokenizer, corpus_split.calibration[:8]),
                                                     16))
    shift = shift_ffn_out_inputs_(model)
    assert shift == pytest.approx(0.169971 + SHIFT_MARGIN, abs=1e-6) and shift == ffn_out_shift(minilm_encoder)
    layers = model.bert.encoder.layer
    if split:
        assert all(isinstance(layer.output.dense, FfnReader) for layer in layers)
        assert all(isinstance(layer.output.dense.tail, torch.nn.Linear) for layer in layers)  # fp32 branch as is
    shifted = [layer.output.dense.main if split else layer.output.dense for layer in layers]
    assert all(isinstance(m, ShiftedInputLinear) for m in shifted)
    texts = corpus_split.heldout[:16]
    expected = encode(minilm_encoder, minilm_tokenizer, texts, 8, 128)
    assert np.abs((encode(model, minilm_tokenizer, texts, 8, 128) - expected).numpy()).max() < 1e-5
    inputs = _inputs_of(model, shifted, minilm_tokenizer, texts)
    assert len(inputs) == 6 * 2 and min(float(x.min()) for x in inputs) > 0.0


def _ffn_out_input_ranges(folder) -> list[tuple[float, float]]:
    """(low, high) of the FakeQuantize on each FFN output MatMul's input in the saved OpenVINO model."""
    import openvino as ov

    ranges = []
    for op in ov.Core().read_model(str(folder / "model.xml")).get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() != "MatMul" or "/output/dense/" not in name or "/attention/" in name:
            continue
        producer = op.input_value(0).get_node()
        if producer.get_type_name() == "FakeQuantize":
            ranges.append((float(np.min(producer.input_value(1).get_node().get_data())),
                           float(np.max(producer.input_value(2).get_node().get_data()))))
    return ranges


@pytest.mark.slow
def test_symmetric_recipe_quantizes_the_shifted_ffn_out_input_unsigned(minilm_encoder, minilm_tokenizer,
                                                                       corpus_split, tmp_path):
    """``icd_outliers_fused_sym`` (performance preset + shift): the FFN output's int8 input range starts at 0;
    without the shift the symmetric range is signed; the mixed preset's is asymmetric (below 0, narrower)."""
    from icd.runtimes.base import Precision
    from icd.runtimes.registry import get_runtime
    from icd.runtimes.source import ModelSource

    source = ModelSource(minilm_encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    sym = replace(RECIPES["icd_outliers_fused_sym"], keep_icd_fp32=False, calibration_texts=16)
    ranges = {}
    for name, recipe in (("sym", sym), ("signed", replace(sym, unsigned_ffn_out=False)),
                         ("mixed", replace(sym, preset="mixed", unsigned_ffn_out=False))):
        folder = tmp_path / name
        folder.mkdir()
        get_runtime("openvino").export(source, folder, Precision.INT8, output_gather=True, threads=1, recipe=recipe)
        ranges[name] = _ffn_out_input_ranges(folder)
    assert [len(r) for r in ranges.values()] == [6, 6, 6]
    assert all(low == 0.0 and high > 0.0 for low, high in ranges["sym"])
    assert all(low == pytest.approx(-high, rel=0.02) for low, high in ranges["signed"])
    assert all(-high < low < 0.0 for low, high in ranges["mixed"])


def test_the_shift_does_not_go_with_icd_smoothing():
    with pytest.raises(ValueError, match="unsigned_ffn_out rewrites Linears that icd_smoothing rewrites"):
        OpenVinoInt8Recipe("bad", unsigned_ffn_out=True)
    assert RECIPES["icd_outliers_fused_fp32_sym"].preset == "performance"
    assert RECIPES["icd_outliers_fused_fp32_sym"].unsigned_ffn_out
