"""Exported ONNX and OpenVINO artefacts equal the in-process model on real MiniLM inputs (an optimized run)."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.runtimes.base import Precision
from icd.runtimes.registry import get_runtime
from icd.runtimes.source import ModelSource
from icd.serve.backend.icd_runtime import OUTPUT_FROM_HIDDEN, LayoutRecord

pytestmark = pytest.mark.slow


def _served_path(version_dir, texts, tokenizer, runtime):
    """What the python backend computes: the runtime's session, then the layout's output gather."""
    session = get_runtime(runtime).load(version_dir, threads=1)
    out = encode(session, tokenizer, texts, 8, 128)
    index = LayoutRecord.load(version_dir, {}).output_index()
    return out[:, torch.from_numpy(index)] if index.size else out


def test_onnx_export_of_the_optimized_run_equals_the_in_process_model(runtime_repo, optimized_source, corpus_split):
    version = runtime_repo / "bert_onnx" / "1"
    texts = corpus_split.heldout[:16]
    expected = encode(optimized_source.torch_encoder(Precision.FP32), optimized_source.tokenizer, texts, 8, 128)
    got = _served_path(version, texts, optimized_source.tokenizer, "onnx")
    assert (got - expected).abs().max().item() < 1e-4
    layout = json.loads((version / "icd_layout.json").read_text())
    assert layout["runtime_permutations"] == {"output": OUTPUT_FROM_HIDDEN}, "embedding model, permuted hidden dim"
    provenance = json.loads((version / "provenance.json").read_text())
    applied = [r["type"] for r in provenance["applied"]]
    assert "permutations" in applied and "int8" not in applied and applied[-1] == "runtime_export"
    assert provenance["verification"]["max_abs_diff"] < 1e-3
    from icd.export.config_pbtxt import config_parameters, read_config

    for model in ("bert_onnx", "bert_openvino"):
        params = config_parameters(read_config(runtime_repo / model / "config.pbtxt"))
        assert params["icd_runtime"] == model.removeprefix("bert_") and params["icd_threads"] == "0"


def test_attention_products_are_told_apart_in_the_exported_graph(runtime_repo):
    """Q·Kᵀ (scores) and softmax·V (values): the two MatMuls per layer with no weight input, by the Softmax."""
    from icd.runtimes.onnx_graph import activation_matmuls

    model = runtime_repo / "bert_onnx" / "1" / "model.onnx"
    scores, values = activation_matmuls(model, ("scores",)), activation_matmuls(model, ("values",))
    assert len(scores) == len(values) == 6 and not set(scores) & set(values)
    assert sorted(activation_matmuls(model)) == sorted(scores + values)
    assert all(n.endswith("/MatMul") for n in scores) and all(n.endswith("/MatMul_1") for n in values)
    with pytest.raises(ValueError, match="keys"):
        activation_matmuls(model, ("keys",))


def test_openvino_int8_export_is_verified_and_faithful(runtime_repo, optimized_source, corpus_split):
    version = runtime_repo / "bert_openvino" / "1"
    texts = corpus_split.heldout[:16]
    fp32 = encode(optimized_source.torch_encoder(Precision.FP32), optimized_source.tokenizer, texts, 8, 128)
    got = _served_path(version, texts, optimized_source.tokenizer, "openvino")
    assert fidelity(fp32, got).cos_mean > 0.99
    sidecar = json.loads((version / "icd_runtime.json").read_text())
    from icd.runtimes.openvino_int8 import DEFAULT_RECIPE

    recipe = sidecar["recipe"]
    assert sidecar["precision"] == "int8" and recipe["name"] == DEFAULT_RECIPE
    # the default recipe's outliers reach the graph as fp32 branches; the Linears icd keeps fp32 stay fp32
    assert recipe["fp32_ffn_neurons"] > 0 and recipe["attention_matmuls_fp32"]
    _, kept = optimized_source.int8_linears()
    assert recipe["fp32_linears"] == kept
    import openvino as ov

    model = ov.Core().read_model(str(version / "model.xml"))
    matmuls = {op.get_friendly_name(): {i.get_node().get_type_name() for i in op.input_values()}
               for op in model.get_ops() if op.get_type_name() == "MatMul"}
    branches = [name for name in matmuls if "/tail/" in name]
    assert branches and all("FakeQuantize" not in matmuls[name] for name in branches)
    assert any("FakeQuantize" in inputs for inputs in matmuls.values())
    assert {"model.xml", "model.bin"} <= {p.name for p in version.iterdir()}


def test_export_with_a_named_int8_recipe(optimized_run, optimized_source, corpus_split, tmp_path, capsys):
    """``--int8-recipe icd_outliers_fused``: the artefact is that recipe's (recorded in the sidecar and provenance),
    verified, and the served path computes the model."""
    from icd.cli.main import main

    rc = main(["export-triton", "--input-dir", str(optimized_run), "--model-name", "bert_fused", "--output-dir",
               str(tmp_path), "--runtime", "openvino", "--precision", "int8", "--int8-recipe", "icd_outliers_fused"])
    assert rc == 0, capsys.readouterr().err
    version = tmp_path / "bert_fused" / "1"
    recipe = json.loads((version / "icd_runtime.json").read_text())["recipe"]
    assert recipe["name"] == "icd_outliers_fused" and recipe["fused_attention"] is True
    assert recipe["attention_matmuls_fp32"] == []
    assert "icd_outliers_fused" in (version / "provenance.json").read_text()
    texts = corpus_split.heldout[:16]
    fp32 = encode(optimized_source.torch_encoder(Precision.FP32), optimized_source.tokenizer, texts, 8, 128)
    assert fidelity(fp32, _served_path(version, texts, optimized_source.tokenizer, "openvino")).cos_mean > 0.99


def _shrink_ffn(encoder, layer: int, keep: int):
    """Drop FFN channels of one layer (a structured prune): the layers then differ in width."""
    bert = encoder.bert
    block = bert.encoder.layer[layer]
    w1, w2 = block.intermediate.dense, block.output.dense
    small1 = torch.nn.Linear(w1.in_features, keep)
    small2 = torch.nn.Linear(keep, w2.out_features)
    with torch.no_grad():
        small1.weight.copy_(w1.weight[:keep]), small1.bias.copy_(w1.bias[:keep])
        small2.weight.copy_(w2.weight[:, :keep]), small2.bias.copy_(w2.bias)
    block.intermediate.dense, block.output.dense = small1, small2


@pytest.mark.parametrize("runtime", ["openvino"])  # its conversion starts from the same ONNX export
def test_layers_of_different_widths_export(runtime, minilm_encoder, minilm_tokenizer, corpus_split, tmp_path):
    encoder = copy.deepcopy(minilm_encoder)
    _shrink_ffn(encoder, layer=1, keep=1000)
    _shrink_ffn(encoder, layer=4, keep=256)
    source = ModelSource(encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    rt = get_runtime(runtime)
    rt.export(source, tmp_path, Precision.FP32, output_gather=True, threads=1)
    texts = corpus_split.heldout[:8]
    got = encode(rt.load(tmp_path, 1), minilm_tokenizer, texts, 8, 128)
    expected = encode(encoder, minilm_tokenizer, texts, 8, 128)
    assert np.abs((got - expected).numpy()).max() < 1e-4


def _outliers_recipe(**fields):
    from dataclasses import replace

    from icd.runtimes.openvino_int8 import RECIPES

    return replace(RECIPES["icd_outliers"], keep_icd_fp32=False, calibration_texts=8, **fields)


def test_openvino_int8_export_keeps_nncf_info_lines_out_of_the_output(minilm_encoder, minilm_tokenizer, corpus_split,
                                                                      tmp_path, capfd):
    source = ModelSource(minilm_encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    get_runtime("openvino").export(source, tmp_path, Precision.INT8, output_gather=True, threads=1,
                                   recipe=_outliers_recipe())
    out, err = capfd.readouterr()
    assert (tmp_path / "model.xml").is_file()
    assert "Not adding activation input quantizer" not in out + err, "NNCF's per-node INFO lines reached the user"
    from nncf import nncf_logger

    assert nncf_logger.level == 20, "NNCF's own log level is restored (INFO)"


def test_a_compacted_layer_narrower_than_the_outlier_count_exports_int8(minilm_encoder, minilm_tokenizer,
                                                                        corpus_split, tmp_path):
    """The default recipe splits 32 FFN neurons per layer; a compacted layer of 28 keeps its FFN-out fp32 whole."""
    encoder = copy.deepcopy(minilm_encoder)
    _shrink_ffn(encoder, layer=0, keep=28)
    source = ModelSource(encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    rt = get_runtime("openvino")
    rt.export(source, tmp_path, Precision.INT8, output_gather=True, threads=1, recipe=_outliers_recipe())
    texts = corpus_split.heldout[:8]
    got = encode(rt.load(tmp_path, 1), minilm_tokenizer, texts, 8, 128)
    expected = encode(encoder, minilm_tokenizer, texts, 8, 128)
    cos = torch.nn.functional.cosine_similarity(got, expected)
    assert cos.mean() > 0.99 and cos.min() > 0.98  # int8 calibrated on 8 texts


def _producer_past_layout(node) -> str:
    """The type of the first operation feeding ``node`` that is not a Reshape / Transpose."""
    while node.get_type_name() in ("Reshape", "Transpose"):
        node = node.input_value(0).get_node()
    return node.get_type_name()


@pytest.mark.parametrize(("scores_fp32", "quantized_inputs"), [((), [True, True, False]), (("scores",), [False] * 3),
                                                               (("scores", "values"), [False] * 3)])
def test_fused_attention_recipe_exports_one_attention_operation_per_layer(minilm_encoder, minilm_tokenizer,
                                                                         corpus_split, tmp_path, scores_fp32,
                                                                         quantized_inputs):
    """``icd_outliers_fused`` exports eager attention, which OpenVINO fuses; NNCF quantizes its query and key only,
    and none of its inputs with ``scores`` in ``attention_matmuls_fp32`` (``icd_outliers_fused_fp32``).
    The compacted model (a head cut) exports too, and the source's own attention implementation is not changed."""
    import openvino as ov

    from icd.transforms.compact_slice import keep_heads_

    encoder = copy.deepcopy(minilm_encoder)
    keep_heads_(encoder, 1, list(range(8)))
    attention = encoder.bert.config._attn_implementation
    source = ModelSource(encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    rt = get_runtime("openvino")
    rt.export(source, tmp_path, Precision.INT8, output_gather=True, threads=1,
              recipe=_outliers_recipe(name="icd_outliers_fused", attention_matmuls_fp32=scores_fp32,
                                      fused_attention=True))
    assert encoder.bert.config._attn_implementation == attention
    assert json.loads((tmp_path / "icd_runtime.json").read_text())["recipe"]["fused_attention"] is True
    model = ov.Core().read_model(str(tmp_path / "model.xml"))
    fused = [op for op in model.get_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    assert len(fused) == 6
    for op in fused:  # inputs: query, key, value (each after its heads' Reshape / Transpose), mask
        assert [_producer_past_layout(op.input_value(i).get_node()) == "FakeQuantize"
                for i in range(3)] == quantized_inputs
    texts = corpus_split.heldout[:8]
    got = encode(rt.load(tmp_path, 1), minilm_tokenizer, texts, 8, 128)
    cos = torch.nn.functional.cosine_similarity(got, encode(encoder, minilm_tokenizer, texts, 8, 128))
    assert cos.mean() > 0.99 and cos.min() > 0.98  # int8 calibrated on 8 texts


def test_fused_fp32_where_openvino_does_not_fuse_attention_is_the_unfused_recipe(minilm_tokenizer, corpus_split,
                                                                                  tmp_path):
    """MPNet's relative position bias keeps its eager attention apart (no fused operation): the fused recipe with
    both products fp32 then quantizes what the unfused recipe does (their MatMuls' inputs stay fp32), instead of
    failing; with none fp32 it quantizes Q·Kᵀ's and softmax·V's inputs too."""
    import openvino as ov

    from icd.runtimes.onnx_graph import ATTENTION_PRODUCTS
    from tests.model.tiny import tiny_encoder

    source = ModelSource(tiny_encoder(model_type="mpnet"), [], minilm_tokenizer, corpus_split.calibration, 128)
    quantizers = {}
    for name, fields in (("unfused", {}), ("fused_fp32", {"fused_attention": True}),
                         ("fused_int8", {"fused_attention": True, "attention_matmuls_fp32": ()})):
        folder = tmp_path / name
        folder.mkdir()
        get_runtime("openvino").export(source, folder, Precision.INT8, output_gather=True, threads=1,
                                       recipe=_outliers_recipe(name=name, **fields))
        ops = ov.Core().read_model(str(folder / "model.xml")).get_ops()
        assert not [op for op in ops if op.get_type_name() == "ScaledDotProductAttention"]
        quantizers[name] = sorted(re.sub(r"\d+", "#", op.get_friendly_name())  # auto-numbered op names differ
                                  for op in ops if op.get_type_name() == "FakeQuantize")
    assert _outliers_recipe().attention_matmuls_fp32 == ATTENTION_PRODUCTS
    assert quantizers["fused_fp32"] == quantizers["unfused"]
    assert len(quantizers["fused_int8"]) > len(quantizers["unfused"])


def test_a_recipe_node_missing_from_the_converted_graph_fails_in_one_line(minilm_encoder, minilm_tokenizer,
                                                                          corpus_split, tmp_path):
    """Eager attention converts into OpenVINO's fused attention operation: there is no Q·Kᵀ node to leave fp32."""
    from icd.errors import ArtefactError

    eager = copy.deepcopy(minilm_encoder)
    eager.bert.set_attn_implementation("eager")
    source = ModelSource(eager, [], minilm_tokenizer, corpus_split.calibration, 128)
    with pytest.raises(ArtefactError, match=r"NNCF quantization \(recipe icd_outliers\) failed: .*not found") as info:
        get_runtime("openvino").export(source, tmp_path, Precision.INT8, output_gather=True, threads=1,
                                       recipe=_outliers_recipe(attention_matmuls_fp32=("scores",)))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert not (tmp_path / "model.xml").exists()


@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_openvino_fp32_and_bf16_export_fused_attention_with_the_same_function(model_type, minilm_encoder,
                                                                                minilm_tokenizer, corpus_split,
                                                                                tmp_path):
    """fp32 / bf16 are exported with eager attention: one fused ``ScaledDotProductAttention`` per layer where
    OpenVINO fuses it (MiniLM), none where it does not (MPNet's position bias); either way the artefact equals the
    in-process model on real held-out text, as the SDPA graph (``fused_attention=False``) does."""
    import openvino as ov

    from tests.model.tiny import tiny_encoder

    encoder = minilm_encoder if model_type == "bert" else tiny_encoder(model_type="mpnet")
    source = ModelSource(encoder, [], minilm_tokenizer, corpus_split.calibration, 128)
    texts = corpus_split.heldout[:8]
    expected = encode(encoder, minilm_tokenizer, texts, 8, 128)
    attention = encoder.bert.config._attn_implementation
    rt = get_runtime("openvino")
    fused_ops = {}
    for name, precision, fused in (("fp32", Precision.FP32, True), ("sdpa", Precision.FP32, False),
                                   ("bf16", Precision.BF16, True)):
        folder = tmp_path / name
        folder.mkdir()
        rt.export(source, folder, precision, output_gather=True, threads=1, fused_attention=fused)
        ops = ov.Core().read_model(str(folder / "model.xml")).get_ops()
        fused_ops[name] = sum(op.get_type_name() == "ScaledDotProductAttention" for op in ops)
        recipe = json.loads((folder / "icd_runtime.json").read_text())["recipe"]
        assert recipe == {"attention": "eager" if fused else "sdpa", "fused_attention_ops": fused_ops[name]}
        got = encode(rt.load(folder, 1), minilm_tokenizer, texts, 8, 128)
        if precision == Precision.FP32:
            assert (got - expected).abs().max().item() < 1e-4, name
        else:
            assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.999
    layers = encoder.bert.config.num_hidden_layers
    assert fused_ops == ({"fp32": layers, "sdpa": 0, "bf16": layers} if model_type == "bert"
                         else {"fp32": 0, "sdpa": 0, "bf16": 0})
    assert encoder.bert.config._attn_implementation == attention, "the source's model is not changed"
