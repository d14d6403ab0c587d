"""An iteration that only re-permutes carries the int8 choices of the accepted model through the permutation
(icd/pipeline/stages/transform.py ``carry_runtime_model``) instead of searching again: the carried int8 model must
be what a new search on the permuted model gives, and compute what the int8 model before the permutation did."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from icd.measure.encode import encode
from icd.model.layout import bert_shape, permutable_dims
from icd.pipeline.stages.transform import RuntimeModel, carry_runtime_model
from icd.transforms.api import TransformContext, prepare_runtime_transform
from icd.transforms.configs import Int8Config
from icd.transforms.permute import apply_permutations_
from icd.transforms.runtime import apply_runtime_transforms_, decode_exponents
from tests.model.tiny import tiny_encoder
from tests.pipeline.test_index_space import _random_perms

CONFIG = Int8Config(scope="all", smooth_alpha=0.5, smooth_min_error=0.0, outlier_channels=2)


def _with_outliers(encoder):
    """BERT-like outlier channels (a few residual channels 30x larger), which make smoothing pay, and Linears
    whose outputs matter next to the residual stream (a random init's are tiny, and so are their int8 errors)."""
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[:3] *= 30.0
            elif isinstance(module, torch.nn.Linear):
                module.weight *= 10.0
    return encoder


def _prepared(fp32_source, context):
    fp32 = copy.deepcopy(fp32_source)
    record, report = prepare_runtime_transform(fp32, CONFIG, context)
    quantized = copy.deepcopy(fp32)
    apply_runtime_transforms_(quantized, [record])
    return RuntimeModel(encoder=quantized, fp32=fp32, runtime_records=[record], reports=[report])


@pytest.mark.parametrize("model_type,task", [("bert", "embedding"), ("mpnet", "sequence_classification"),
                                             ("roberta", "embedding")])
def test_carried_int8_equals_a_new_search_on_the_permuted_model(model_type, task, minilm_tokenizer, corpus_split):
    before = _with_outliers(tiny_encoder(task=task, model_type=model_type))
    context = TransformContext(tokenizer=minilm_tokenizer, calibration_texts=corpus_split.calibration[:32],
                               batch_size=16, max_length=32)
    runtime = _prepared(before, context)
    scales = runtime.runtime_records[0]["data"]["input_scale_log2"]
    assert scales, "the search smoothed no Linear: the reorder would go untested"

    perms = _random_perms(permutable_dims(before), bert_shape(before).head_dim, seed=7)
    candidate = copy.deepcopy(before)
    apply_permutations_(candidate, perms)
    carried = carry_runtime_model(runtime, before, candidate, perms)
    searched = _prepared(candidate, context)

    got, want = carried.runtime_records[0]["data"], searched.runtime_records[0]["data"]
    assert got["quantized"] == want["quantized"] and sorted(got["input_scale_log2"]) == sorted(want["input_scale_log2"])
    same = [float((decode_exponents(got["input_scale_log2"][n]) == decode_exponents(want["input_scale_log2"][n]))
                  .float().mean()) for n in want["input_scale_log2"]]
    assert np.mean(same) >= 0.98, same
    assert any(got["input_scale_log2"][n] != scales[n] for n in scales)  # the exponents were reordered
    assert "carried" in carried.reports[0]
    channels_before = runtime.runtime_records[0]["data"]["fp32_channels"]
    assert sorted(got["fp32_channels"]) == sorted(want["fp32_channels"]) == sorted(channels_before)
    assert np.mean([got["fp32_channels"][n] == want["fp32_channels"][n] for n in want["fp32_channels"]]) >= 0.9
    assert any(got["fp32_channels"][n] != channels_before[n] for n in channels_before)  # they were reordered

    texts = corpus_split.heldout[:16]
    outputs = {name: encode(model, minilm_tokenizer, texts, 8, 32) for name, model in
               (("carried", carried.encoder), ("searched", searched.encoder), ("int8 before", runtime.encoder),
                ("fp32", before))}
    int8_error = float((outputs["searched"] - outputs["fp32"]).abs().max())
    assert int8_error > 1e-3  # int8 did run: the comparisons below can fail
    assert float((outputs["carried"] - outputs["searched"]).abs().max()) < 0.1 * int8_error
    if task == "embedding":  # the output is gathered back to the original order: comparable with the model before
        assert float((outputs["carried"] - outputs["int8 before"]).abs().max()) < 0.1 * int8_error


def test_records_of_unknown_types_are_not_carried():
    before = tiny_encoder()
    runtime = RuntimeModel(encoder=before, fp32=before, runtime_records=[{"type": "fp8", "version": 1}])
    assert carry_runtime_model(runtime, before, copy.deepcopy(before), {}) is None
