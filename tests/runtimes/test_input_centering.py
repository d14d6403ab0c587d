"""LayerNorm centring (icd.runtimes.input_centering) preserves the function — on real MiniLM text and on every
supported family —, centres what the Linears read on the calibration texts, narrows NNCF's symmetric ranges in the
exported OpenVINO model, and refuses what it cannot centre."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from icd.calibrate.collector import input_absmax, input_range
from icd.measure.encode import encode, tokenize
from icd.runtimes.input_centering import center_layer_norms_, centered_norms, norm_midpoints
from icd.runtimes.openvino_int8 import RECIPES, OpenVinoInt8Recipe
from icd.runtimes.outlier_split import split_ffn_neurons_, widest_ffn_neurons
from icd.runtimes.unsigned_shift import shift_ffn_out_inputs_
from tests.model.tiny import FAMILY_TYPES, outputs, random_batches, tiny_encoder


def _batches(tokenizer, texts):
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in tokenize(tokenizer, texts, 8, 128)]


def _real_token_inputs(model, modules, batches):
    """Per module, its inputs over the real tokens of ``batches`` (rows × channels)."""
    seen = {key: [] for key in modules}
    mask = []
    handles = [m.register_forward_pre_hook(lambda _m, args, key=key: seen[key].append(args[0][mask[0]].detach()))
               for key, m in modules.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                mask[:] = [batch["attention_mask"].bool()]
                model(batch["input_ids"], batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    return {key: torch.cat(rows) for key, rows in seen.items()}


def test_input_range_is_the_min_and_max_over_real_tokens(minilm_encoder, minilm_tokenizer, corpus_split):
    layer = minilm_encoder.bert.encoder.layer[2]
    modules = {"query": layer.attention.self.query, "ffn_out": layer.output.dense}
    batches = _batches(minilm_tokenizer, corpus_split.calibration[:12])
    pairs = [(b["input_ids"], b["attention_mask"]) for b in batches]
    seen = _real_token_inputs(minilm_encoder, modules, batches)
    ranges = input_range(minilm_encoder, modules, pairs)
    absmax = input_absmax(minilm_encoder, modules, pairs)
    for key, rows in seen.items():
        low, high = ranges[key]
        assert torch.equal(low, rows.amin(dim=0)) and torch.equal(high, rows.amax(dim=0))
        assert torch.equal(absmax[key], rows.abs().amax(dim=0))


def test_the_centered_norms_are_what_qkv_and_ffn_in_read(minilm_encoder):
    norms = centered_norms(minilm_encoder)
    assert len(norms) == 12
    assert norms[0].norm == "embeddings.LayerNorm"
    assert norms[0].readers == tuple(f"encoder.layer.0.attention.self.{r}" for r in ("query", "key", "value"))
    assert norms[0].residual_writer == "encoder.layer.0.attention.output.dense"
    assert norms[2].norm == "encoder.layer.0.output.LayerNorm"
    assert norms[-1].norm == "encoder.layer.5.attention.output.LayerNorm"
    assert norms[-1].readers == ("encoder.layer.5.intermediate.dense",)
    assert norms[-1].residual_writer == "encoder.layer.5.output.dense"


@pytest.mark.parametrize("then_split_and_shift", [False, True])
def test_centred_minilm_equals_the_original_and_its_linears_read_centred_channels(
        minilm_encoder, minilm_tokenizer, corpus_split, then_split_and_shift):
    """On real MiniLM text: outputs unchanged on held-out texts (also after the export's FFN split and shift, made
    after the centring); on the calibration texts every channel Q, K, V and the FFN input read spans [-h, h]."""
    model = copy.deepcopy(minilm_encoder)
    calibration = _batches(minilm_tokenizer, corpus_split.calibration[:16])
    before = _real_token_inputs(model, {n.norm: model.bert.get_submodule(n.readers[0])
                                        for n in centered_norms(model)}, calibration)
    midpoints = center_layer_norms_(model, calibration)
    assert max(float(m.abs().max()) for m in midpoints.values()) > 1.0  # LayerNorm outputs are off centre
    seen = _real_token_inputs(model, {f"{n.norm}>{r}": model.bert.get_submodule(r)
                                      for n in centered_norms(model) for r in n.readers}, calibration)
    assert len(seen) == 6 * 4
    for key, rows in seen.items():
        norm = key.split(">")[0]
        assert torch.allclose(rows.amin(dim=0), -rows.amax(dim=0), atol=1e-4), key
        assert torch.allclose(rows, before[norm] - midpoints[norm], atol=1e-4), key
    if then_split_and_shift:
        split_ffn_neurons_(model, widest_ffn_neurons(model, calibration, 16))
        shift_ffn_out_inputs_(model)
    texts = corpus_split.heldout[:16]
    expected = encode(minilm_encoder, minilm_tokenizer, texts, 8, 128)
    assert np.abs((encode(model, minilm_tokenizer, texts, 8, 128) - expected).numpy()).max() < 1e-5


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_centring_preserves_every_family(model_type):
    """Tiny random models with random LayerNorm biases (so the outputs sit off centre)."""
    encoder = tiny_encoder(model_type=model_type)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 3)
    batches = random_batches(0)
    expected = outputs(encoder, batches)
    centred = copy.deepcopy(encoder)
    midpoints = center_layer_norms_(centred, [{"input_ids": b.input_ids, "attention_mask": b.attention_mask}
                                              for b in batches])
    assert len(midpoints) == 4 and max(float(m.abs().max()) for m in midpoints.values()) > 1.0
    assert torch.allclose(outputs(centred, batches), expected, atol=1e-4 * float(expected.abs().max()))


def test_centring_refuses_a_split_model_a_norm_without_bias_and_no_tokens(minilm_encoder, minilm_tokenizer,
                                                                         corpus_split):
    calibration = _batches(minilm_tokenizer, corpus_split.calibration[:4])
    split = copy.deepcopy(minilm_encoder)
    split_ffn_neurons_(split, widest_ffn_neurons(split, calibration, 4))
    with pytest.raises(ValueError, match="encoder.layer.0.intermediate.dense is a FfnWriter, not a Linear with a "
                                         "bias \\(centre before splitting\\)"):
        center_layer_norms_(split, calibration)
    no_bias = copy.deepcopy(minilm_encoder)
    no_bias.bert.encoder.layer[3].attention.output.LayerNorm.bias = None
    with pytest.raises(ValueError, match="encoder.layer.3.attention.output.LayerNorm has no bias"):
        center_layer_norms_(no_bias, calibration)
    with pytest.raises(ValueError, match="no calibration token reached embeddings.LayerNorm \\(12 in all\\)"):
        norm_midpoints(minilm_encoder, centered_norms(minilm_encoder), [])


def test_the_recipe_field_is_checked():
    with pytest.raises(ValueError, match="centered_layer_norms rewrites Linears that icd_smoothing rewrites"):
        OpenVinoInt8Recipe("bad", centered_layer_norms=True)
    centred = RECIPES["icd_outliers_fused_fp32_sym_centered"]
    assert centred.centered_layer_norms and centred.preset == "performance" and centred.unsigned_ffn_out
    assert RECIPES["icd_outliers_fused_fp32_sym_centered_gptq"].weight_rounding == "gptq"


def _input_highs(folder, scope: str) -> list[float]:
    """The upper end of the FakeQuantize on the input of each MatMul under ``scope`` in the saved OpenVINO model."""
    import openvino as ov

    highs = []
    for op in ov.Core().read_model(str(folder / "model.xml")).get_ordered_ops():
        if op.get_type_name() == "MatMul" and scope in op.get_friendly_name():
            producer = op.input_value(0).get_node()
            assert producer.get_type_name() == "FakeQuantize", op.get_friendly_name()
            highs.append(float(np.max(producer.input_value(2).get_node().get_data())))
    return highs


@pytest.mark.slow
def test_centring_narrows_the_symmetric_int8_ranges_of_the_exported_model(minilm_encoder, minilm_tokenizer,
                                                                          corpus_split, tmp_path):
    """The exported OpenVINO model of the centred recipe (NNCF's SmoothQuant off, so ranges are in the inputs' own
    units): the query and FFN input quantizers of every layer have a narrower symmetric range than uncentred."""
    from icd.runtimes.base import Precision
    from icd.runtimes.registry import get_runtime
    from icd.runtimes.source import ModelSource

    source = ModelSource(minilm_encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    centred = replace(RECIPES["icd_outliers_fused_fp32_sym_centered"], keep_icd_fp32=False, calibration_texts=16,
                      nncf_smooth_quant=False)
    scopes = ("/self/query/", "/intermediate/dense/main/")
    highs = {}
    for name, recipe in (("centred", centred), ("plain", replace(centred, centered_layer_norms=False))):
        folder = tmp_path / name
        folder.mkdir()
        get_runtime("openvino").export(source, folder, Precision.INT8, output_gather=True, threads=1, recipe=recipe)
        highs[name] = {scope: _input_highs(folder, scope) for scope in scopes}
    for scope in scopes:
        assert len(highs["centred"][scope]) == len(highs["plain"][scope]) == 6
        assert all(c < p for c, p in zip(highs["centred"][scope], highs["plain"][scope])), scope
