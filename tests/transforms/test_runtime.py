"""Runtime int8 records: deterministic replay, save -> load equality, TorchScript tracing, bad records."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.config.schema import ModelSection
from icd.errors import ArtefactError
from icd.transforms.int8 import linear_names, quantized_names
from icd.transforms.runtime import (
    apply_runtime_transforms_,
    decode_exponents,
    encode_exponents,
    int8_runtime_record,
)
from icd.transforms.smoothing import InputScaled
from tests.model.tiny import tiny_encoder


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


def _record(encoder):
    names = linear_names(encoder)
    ffn_in = [n for n in names if n.endswith("intermediate.dense")]
    gen = torch.Generator().manual_seed(3)
    scales = {n: torch.randint(-3, 4, (encoder.bert.get_submodule(n).in_features,), generator=gen, dtype=torch.int8)
              for n in ffn_in}
    return int8_runtime_record(names[:-1], "per_channel", scales)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=0, max_size=64))
def test_exponents_round_trip_through_text(values):
    k = torch.tensor(values, dtype=torch.int8)
    assert decode_exponents(encode_exponents(k)).tolist() == values


def test_record_replays_exactly_the_named_linears(batch):
    encoder = tiny_encoder()
    record = _record(encoder)
    apply_runtime_transforms_(encoder, [record])
    assert sorted(quantized_names(encoder)) == record["data"]["quantized"]
    assert sum(isinstance(m, InputScaled) for m in encoder.modules()) == 2
    out = encoder(*batch)
    assert out.shape == (3, 64) and out.dtype == torch.float32


def test_record_validates_smoothed_names():
    with pytest.raises(ValueError, match="not quantized"):
        int8_runtime_record(["a"], "per_channel", {"b": torch.zeros(2, dtype=torch.int8)})


def test_replay_is_deterministic(batch):
    base = tiny_encoder()
    record = _record(base)
    outs = []
    for _ in range(2):
        model = copy.deepcopy(base)
        apply_runtime_transforms_(model, [record])
        with torch.inference_mode():
            outs.append(model(*batch))
    assert torch.equal(outs[0], outs[1])


def test_save_load_gives_in_memory_outputs(tmp_path, batch, minilm_tokenizer):
    from icd.pipeline.model_store import load_run_encoder, save_run_encoder

    fp32 = tiny_encoder()
    record = _record(fp32)
    in_memory = copy.deepcopy(fp32)
    apply_runtime_transforms_(in_memory, [record])
    folder = save_run_encoder(tmp_path, fp32, minilm_tokenizer, ModelSection(), [record])
    loaded = load_run_encoder(folder)
    assert sorted(quantized_names(loaded)) == record["data"]["quantized"]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*batch), in_memory(*batch), rtol=1e-5, atol=1e-5)


def test_quantized_encoder_traces_with_torchscript(batch):
    encoder = tiny_encoder()
    apply_runtime_transforms_(encoder, [_record(encoder)])
    with torch.inference_mode():
        expected = encoder(*batch)
    traced = torch.jit.trace(encoder, batch, check_trace=False)
    other_ids = torch.randint(1000, 30000, (5, 20), generator=torch.Generator().manual_seed(9))
    other_mask = torch.ones_like(other_ids)
    other_mask[0, 3:] = 0
    with torch.inference_mode():
        torch.testing.assert_close(traced(*batch), expected)
        # another batch size, length and padding: the trace must not have baked in the example's shapes
        torch.testing.assert_close(traced(other_ids, other_mask), encoder(other_ids, other_mask))
    # what an export writes and a libtorch server reads back: save / load of the traced module
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    reloaded = torch.jit.load(buffer)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(*batch), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"type": "fp8", "version": 1, "data": {}}, "unknown record type"),
        ({"type": "int8", "version": 9, "data": {"quantized": []}}, "version"),
        ({"type": "int8", "version": 1, "data": {}}, "data.quantized"),
        ({"type": "int8", "version": 1, "data": {"quantized": ["nope"]}}, "nope"),
        ({"type": "int8", "version": 1, "data": {"quantized": [], "qscheme": "per_row"}}, "qscheme"),
        ({"type": "int8", "version": 1, "data": {"quantized": [], "dtype": "quint4"}}, "dtype"),
        ({"type": "int8", "version": 1, "data": {"quantized": ["encoder.layer.0.intermediate.dense"],
                                                  "input_scale_log2": {"encoder.layer.0.intermediate.dense": "%%"}}},
         "base64"),
    ],
)
def test_bad_records_raise_artefact_error(record, message):
    with pytest.raises(ArtefactError, match=message):
        apply_runtime_transforms_(tiny_encoder(), [record])
