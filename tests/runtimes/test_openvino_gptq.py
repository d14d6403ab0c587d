"""GPTQ rounding of an NNCF-style OpenVINO int8 graph (icd/runtimes/openvino_gptq.py): codes on the quantizer's
own grid, a smaller output error than nearest rounding, refusals of what it cannot round."""

from __future__ import annotations

import json

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
from openvino import opset13 as ops  # noqa: E402

from icd.errors import ArtefactError  # noqa: E402
from icd.runtimes.openvino_gptq import round_weights_gptq_, weight_quantizers  # noqa: E402

PROPERTIES = {"INFERENCE_NUM_THREADS": "1", "INFERENCE_PRECISION_HINT": "f32"}
IN, OUT = 24, 8


def _graph(weight: np.ndarray, levels: int = 255, symmetric: bool = True):
    """``input_ids`` (float features here) → MatMul with a FakeQuantize'd constant weight (``out × in``,
    transpose_b), plus an unused ``attention_mask`` input, as NNCF leaves a Linear with weight compression off."""
    x = ops.parameter([-1, -1, IN], np.float32, name="input_ids")
    mask = ops.parameter([-1, -1], np.float32, name="attention_mask")
    absmax = np.abs(weight).max(axis=1, keepdims=True).astype(np.float32)
    low = -absmax if symmetric else -0.5 * absmax
    quantizer = ops.fake_quantize(ops.constant(weight), ops.constant(low), ops.constant(absmax), ops.constant(low),
                                  ops.constant(absmax), levels)
    product = ops.matmul(x, quantizer, transpose_a=False, transpose_b=True)
    return ov.Model([product.output(0)], [x, mask], "one_linear")


def _inputs(seed: int, rows: int = 64):
    """Correlated features (GPTQ has something to exploit; one mixing for every seed, so calibration and
    held-out inputs share a distribution) with one padded position per batch."""
    mixing = np.random.default_rng(100).normal(size=(IN, IN)).astype(np.float32)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(4):
        x = rng.normal(size=(2, rows // 2, IN)).astype(np.float32) @ mixing
        mask = np.ones((2, rows // 2), np.float32)
        mask[1, -1] = 0
        x[1, -1] = 1e3  # a padded position: must not count
        batches.append({"input_ids": x, "attention_mask": mask})
    return batches


def _run(model, batch):
    compiled = ov.Core().compile_model(model, "CPU", PROPERTIES)
    return compiled({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})[0]


def test_gptq_codes_lie_on_the_quantizers_grid_and_cut_the_output_error():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(OUT, IN)).astype(np.float32)
    model = _graph(weight)
    report = round_weights_gptq_(model, _inputs(1), PROPERTIES)
    assert report["weight_rounding"] == "gptq" and report["matmuls"] == 1
    assert report["rel_output_error_gptq_mean"] < report["rel_output_error_nearest_mean"]
    (quantizer,) = weight_quantizers(model)
    rounded = quantizer.weight()
    scale = np.abs(weight).max(axis=1, keepdims=True) / 127
    codes = rounded / scale
    assert np.allclose(codes, np.round(codes), atol=1e-4) and np.abs(codes).max() <= 127 + 1e-4
    high = quantizer.fake_quantize.input_value(2).get_node().get_data().reshape(-1)
    assert np.allclose(high, np.abs(weight).max(axis=1))  # the grid (FakeQuantize) unchanged
    # Held-out inputs: the rounded graph is closer to the fp32 product than NNCF's nearest rounding.
    batch = _inputs(2)[0]
    exact = batch["input_ids"] @ weight.T
    nearest = _run(_graph(weight), batch)
    gptq = _run(model, batch)
    real = batch["attention_mask"] != 0
    assert np.linalg.norm((gptq - exact)[real]) < np.linalg.norm((nearest - exact)[real])


@pytest.mark.parametrize("levels, symmetric", [(256, True), (255, False)])
def test_a_grid_other_than_symmetric_int8_is_refused(levels, symmetric):
    weight = np.random.default_rng(0).normal(size=(OUT, IN)).astype(np.float32)
    with pytest.raises(ArtefactError, match="is not a symmetric per-output-channel int8 grid"):
        round_weights_gptq_(_graph(weight, levels, symmetric), _inputs(1), PROPERTIES)


def test_a_model_without_fake_quantized_weights_is_refused():
    x = ops.parameter([-1, -1, IN], np.float32, name="input_ids")
    mask = ops.parameter([-1, -1], np.float32, name="attention_mask")
    product = ops.matmul(x, ops.constant(np.ones((OUT, IN), np.float32)), transpose_a=False, transpose_b=True)
    with pytest.raises(ArtefactError, match="no fp32 weight behind a FakeQuantize"):
        round_weights_gptq_(ov.Model([product.output(0)], [x, mask], "plain"), _inputs(1), PROPERTIES)


def test_recipe_refuses_an_unknown_rounding():
    from icd.runtimes.openvino_int8 import OpenVinoInt8Recipe

    with pytest.raises(ValueError, match="weight_rounding must be one of"):
        OpenVinoInt8Recipe("x", weight_rounding="stochastic")


@pytest.mark.slow
def test_openvino_export_with_gptq_rounding(minilm_encoder, minilm_tokenizer, corpus_split, tmp_path):
    """The full path on real MiniLM: NNCF without weight compression, GPTQ on the quantized model's own inputs,
    weights compressed to int8 as NNCF stores them, the export verified and faithful."""
    from dataclasses import replace

    from icd.measure.encode import encode
    from icd.measure.fidelity import fidelity
    from icd.runtimes.base import Precision
    from icd.runtimes.openvino_int8 import RECIPES
    from icd.runtimes.registry import get_runtime
    from icd.runtimes.source import ModelSource

    source = ModelSource(minilm_encoder, [], minilm_tokenizer, corpus_split.calibration[:32], 128)
    recipe = replace(RECIPES["icd_outliers_fused_gptq"], calibration_texts=32)
    runtime = get_runtime("openvino")
    runtime.export(source, tmp_path, Precision.INT8, output_gather=True, threads=1, recipe=recipe)
    described = json.loads((tmp_path / "icd_runtime.json").read_text())["recipe"]
    assert described["weight_rounding"] == "gptq" and described["matmuls"] == 6 * 6
    assert described["rel_output_error_gptq_mean"] < described["rel_output_error_nearest_mean"]
    model = ov.Core().read_model(str(tmp_path / "model.xml"))
    int8_constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                      and op.get_element_type() == ov.Type.i8]
    # compressed as NNCF stores weights: the 36 Linears' and the three embedding tables NNCF quantizes (Gathers)
    assert len(int8_constants) == 6 * 6 + 3 and not weight_quantizers(model)
    texts = corpus_split.heldout[:8]
    got = encode(runtime.load(tmp_path, 1), minilm_tokenizer, texts, 8, 128)
    assert fidelity(encode(minilm_encoder, minilm_tokenizer, texts, 8, 128), got).cos_mean > 0.99
