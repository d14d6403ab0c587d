"""The FFN neuron split (icd.runtimes.outlier_split.py) preserves the function, and its fp32 branch reaches NNCF."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from icd.measure.encode import encode, tokenize
from icd.runtimes.outlier_split import (FfnReader, FfnWriter, InputSplitLinear, residual_readers, split_ffn_neurons_,
                                        split_ffn_outliers_, split_input_channels_, widest_ffn_neurons,
                                        widest_input_channels)
from icd.transforms.compact_slice import keep_ffn_
from icd.runtimes.openvino_int8 import RECIPES, OpenVinoInt8Recipe


def _batches(tokenizer, texts):
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in tokenize(tokenizer, texts, 8, 128)]


def test_split_model_equals_the_original_on_real_inputs(minilm_encoder, minilm_tokenizer, corpus_split):
    texts = corpus_split.heldout[:16]
    neurons = widest_ffn_neurons(minilm_encoder, _batches(minilm_tokenizer, corpus_split.calibration[:16]), 16)
    split = copy.deepcopy(minilm_encoder)
    tails = split_ffn_neurons_(split, neurons)
    assert tails == [f"encoder.layer.{i}.{part}.dense.tail" for i in range(6) for part in ("intermediate", "output")]
    layer = split.bert.encoder.layer[0]
    assert isinstance(layer.intermediate.dense, FfnWriter) and isinstance(layer.output.dense, FfnReader)
    assert layer.output.dense.tail.in_features == 16 and layer.output.dense.main.in_features == 1536 - 16
    expected = encode(minilm_encoder, minilm_tokenizer, texts, 8, 128)
    got = encode(split, minilm_tokenizer, texts, 8, 128)
    assert np.abs((got - expected).numpy()).max() < 1e-5


def test_a_layer_no_wider_than_the_count_keeps_its_ffn_out_fp32_whole(minilm_encoder, minilm_tokenizer,
                                                                      corpus_split):
    """A compacted layer with fewer FFN neurons than the recipe's count is not split (found exporting a compacted
    model: 'layer 0: split 28 of 28 FFN neurons')."""
    compacted = copy.deepcopy(minilm_encoder)
    keep_ffn_(compacted, 2, list(range(20)))
    neurons = widest_ffn_neurons(compacted, _batches(minilm_tokenizer, corpus_split.calibration[:8]), 32)
    assert neurons[2].numel() == 20 and neurons[3].numel() == 32
    split = copy.deepcopy(compacted)
    fp32 = split_ffn_outliers_(split, neurons)
    assert fp32[4] == "encoder.layer.2.output.dense" and len(fp32) == 5 * 2 + 1
    assert fp32[:4] == ["encoder.layer.0.intermediate.dense.tail", "encoder.layer.0.output.dense.tail",
                        "encoder.layer.1.intermediate.dense.tail", "encoder.layer.1.output.dense.tail"]
    assert isinstance(split.bert.encoder.layer[2].output.dense, torch.nn.Linear)
    assert isinstance(split.bert.encoder.layer[3].output.dense, FfnReader)
    texts = corpus_split.heldout[:8]
    expected = encode(compacted, minilm_tokenizer, texts, 8, 128)
    assert np.abs((encode(split, minilm_tokenizer, texts, 8, 128) - expected).numpy()).max() < 1e-5


def test_input_split_after_ffn_split_equals_the_original(minilm_encoder, minilm_tokenizer, corpus_split):
    batches = _batches(minilm_tokenizer, corpus_split.calibration[:16])
    split = copy.deepcopy(minilm_encoder)
    split_ffn_neurons_(split, widest_ffn_neurons(split, batches, 8))
    readers = residual_readers(split)
    assert readers[:4] == ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.key",
                           "encoder.layer.0.attention.self.value", "encoder.layer.0.intermediate.dense.main"]
    channels = widest_input_channels(split, readers, batches, 4)
    tails = split_input_channels_(split, channels)
    assert len(tails) == 24 and tails[0].endswith(".tail")
    query = split.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, InputSplitLinear) and query.tail.in_features == 4
    # the masked channels are zero in the int8 part's weights too: they widen no range there
    assert torch.count_nonzero(query.main.weight[:, query.channels]) == 0
    texts = corpus_split.heldout[:16]
    expected = encode(minilm_encoder, minilm_tokenizer, texts, 8, 128)
    got = encode(split, minilm_tokenizer, texts, 8, 128)
    assert np.abs((got - expected).numpy()).max() < 1e-5


def test_widest_neurons_are_the_largest_ffn_out_inputs(minilm_encoder, minilm_tokenizer, corpus_split):
    batches = _batches(minilm_tokenizer, corpus_split.calibration[:8])
    seen = []
    reader = minilm_encoder.bert.encoder.layer[2].output.dense
    handle = reader.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].abs().flatten(0, -2).amax(0)))
    try:
        neurons = widest_ffn_neurons(minilm_encoder, batches, 4)
        assert seen, "the hook saw no input"
    finally:
        handle.remove()
    widest = torch.stack(seen).amax(0)
    assert set(neurons[2].tolist()) == set(torch.topk(widest, 4).indices.tolist())
    assert neurons[2].tolist() == sorted(neurons[2].tolist())


@pytest.mark.parametrize("index, problem", [([], "layer 0: split 0 of 1536 FFN neurons"), ([3, 3], "distinct"),
                                            ([1536], "distinct"), (list(range(1536)), "split 1536 of")])
def test_bad_neuron_lists_are_refused(minilm_encoder, index, problem):
    model = copy.deepcopy(minilm_encoder)
    with pytest.raises(ValueError, match=problem):
        split_ffn_neurons_(model, {0: torch.tensor(index, dtype=torch.long)})


def test_bad_input_channel_lists_are_refused(minilm_encoder):
    model = copy.deepcopy(minilm_encoder)
    with pytest.raises(ValueError, match="encoder.layer.0.attention.self.query: split 0 of 384 input channels"):
        split_input_channels_(model, {"encoder.layer.0.attention.self.query": torch.tensor([], dtype=torch.long)})
    with pytest.raises(ValueError, match="only from a Linear"):
        split_input_channels_(model, {"encoder.layer.0.attention.self": torch.tensor([1])})


def test_recipe_refuses_a_split_with_what_already_rewrites_ffn_out():
    with pytest.raises(ValueError, match="fp32_ffn_neurons"):
        OpenVinoInt8Recipe("x", icd_smoothing=True, fp32_ffn_neurons=8)
    with pytest.raises(ValueError, match="fp32_ffn_neurons"):
        OpenVinoInt8Recipe("x", icd_smoothing=False, ignore_per_token=True, fp32_ffn_neurons=8)
    with pytest.raises(ValueError, match="fp32_input_channels"):
        OpenVinoInt8Recipe("x", icd_smoothing=True, fp32_input_channels=4)
    with pytest.raises(ValueError, match=">= 0"):
        OpenVinoInt8Recipe("x", icd_smoothing=False, fp32_ffn_neurons=-1)
    with pytest.raises(ValueError, match="smooth_quant_alpha"):
        OpenVinoInt8Recipe("x", icd_smoothing=False, smooth_quant_alpha=1.5)
    with pytest.raises(ValueError, match="attention_matmuls_fp32 takes distinct names"):
        OpenVinoInt8Recipe("x", icd_smoothing=False, attention_matmuls_fp32=("keys",))
    with pytest.raises(ValueError, match="attention_matmuls_fp32 takes distinct names"):
        OpenVinoInt8Recipe("x", icd_smoothing=False, attention_matmuls_fp32=("scores", "scores"))


@pytest.mark.slow
def test_openvino_int8_with_split_leaves_the_branch_fp32(minilm_encoder, minilm_tokenizer, corpus_split, tmp_path):
    from dataclasses import replace

    import openvino as ov

    from icd.measure.fidelity import fidelity
    from icd.runtimes.base import Precision
    from icd.runtimes.registry import get_runtime
    from icd.runtimes.source import ModelSource

    source = ModelSource(minilm_encoder, [], minilm_tokenizer, corpus_split.calibration[:32], 128)
    recipe = replace(RECIPES["icd_outliers_qkv_ffn_in8"], calibration_texts=32)
    runtime = get_runtime("openvino")
    runtime.export(source, tmp_path, Precision.INT8, output_gather=True, threads=1, recipe=recipe)
    described = json.loads((tmp_path / "icd_runtime.json").read_text())["recipe"]
    assert described["fp32_ffn_neurons"] == 32 and described["fp32_input_channels"] == 8
    model = ov.Core().read_model(str(tmp_path / "model.xml"))
    quantized_inputs = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"
                        and any(i.get_node().get_type_name() == "FakeQuantize" for i in op.input_values())}
    matmuls = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"]
    tails = [name for name in matmuls if "/tail/" in name]
    mains = [name for name in matmuls if "/output/dense/main/" in name or "/query/main/" in name]
    assert len(tails) == 6 * 6 and len(mains) == 12  # per layer: q, k, v, ffn_in.main, ffn_in, ffn_out branches
    assert not set(tails) & quantized_inputs and set(mains) <= quantized_inputs
    attention = [name for name in matmuls if name.endswith(("/attention/self/MatMul", "/attention/self/MatMul_1"))]
    assert len(attention) == 12 and not set(attention) & quantized_inputs  # attention_matmuls_fp32
    texts = corpus_split.heldout[:8]
    got = encode(runtime.load(tmp_path, 1), minilm_tokenizer, texts, 8, 128)
    assert fidelity(encode(minilm_encoder, minilm_tokenizer, texts, 8, 128), got).cos_mean > 0.99
