"""Runtime int8 records: deterministic replay, save -> load equality, old records, TorchScript tracing, bad records."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.config.schema import ModelSection
from icd.errors import ArtefactError
from icd.transforms.int8 import linear_names, per_token_names, quantized_names
from icd.transforms.int8_kernels import DynamicInt8Linear, pack_dynamic_linear
from icd.transforms.runtime import (
    apply_runtime_transforms_,
    decode_exponents,
    encode_exponents,
    int8_runtime_record,
)
from icd.transforms.smoothing import InputScaled, smooth_linear_input_
from tests.model.tiny import tiny_encoder


def _scales(encoder):
    ffn_in = [n for n in linear_names(encoder) if n.endswith("intermediate.dense")]
    gen = torch.Generator().manual_seed(3)
    return {n: torch.randint(-3, 4, (encoder.bert.get_submodule(n).in_features,), generator=gen, dtype=torch.int8)
            for n in ffn_in}


def _record(encoder, scheme="per_channel"):
    names = linear_names(encoder)
    if scheme == "per_token":  # per token on every other Linear, 8-bit activations
        return int8_runtime_record(names[:-1], scheme, _scales(encoder), reduce_range=False, per_token=names[:-1:2])
    return int8_runtime_record(names[:-1], scheme, _scales(encoder))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=0, max_size=64))
def test_exponents_round_trip_through_text(values):
    k = torch.tensor(values, dtype=torch.int8)
    assert decode_exponents(encode_exponents(k)).tolist() == values


@pytest.mark.parametrize("scheme", ["per_channel", "per_token"])
def test_record_replays_exactly_the_named_linears(batch, scheme):
    encoder = tiny_encoder()
    record = _record(encoder, scheme)
    apply_runtime_transforms_(encoder, [record])
    assert sorted(quantized_names(encoder)) == record["data"]["quantized"]
    assert sorted(per_token_names(encoder)) == record["data"].get("per_token", [])
    smoothed = [m for m in encoder.modules() if isinstance(m, DynamicInt8Linear) and m.inv_scale is not None]
    assert len(smoothed) == 2 and not any(isinstance(m, InputScaled) for m in encoder.modules())
    assert all(m.reduce_range is record["data"]["reduce_range"] for m in encoder.modules()
               if isinstance(m, DynamicInt8Linear))
    out = encoder(*batch)
    assert out.shape == (batch[0].shape[0], 64) and out.dtype == torch.float32


def test_record_validates_smoothed_and_per_token_names():
    with pytest.raises(ValueError, match="not quantized"):
        int8_runtime_record(["a"], "per_channel", {"b": torch.zeros(2, dtype=torch.int8)})
    with pytest.raises(ValueError, match="not quantized"):
        int8_runtime_record(["a"], "per_token", per_token=["b"])
    with pytest.raises(ValueError, match="per_token"):
        int8_runtime_record(["a"], "per_channel", per_token=["a"])
    assert int8_runtime_record(["a", "b"], "per_token")["data"]["per_token"] == ["a", "b"]


def _old_style(encoder, record):
    """What the pre-per-token code built from a record: InputScaled + torch's dynamic Linear (7-bit), onednn."""
    data = record["data"]
    for name, text in data["input_scale_log2"].items():
        smooth_linear_input_(encoder.bert, name, decode_exponents(text))
    modules = dict(encoder.bert.named_modules())
    for name in data["quantized"]:
        module = modules[name]
        packed = pack_dynamic_linear(module.inner if isinstance(module, InputScaled) else module,
                                     data["qscheme"] == "per_channel", data["engine"])
        if isinstance(module, InputScaled):
            module.inner = packed
        else:
            parent, _, leaf = name.rpartition(".")
            setattr(encoder.bert.get_submodule(parent), leaf, packed)


@pytest.mark.parametrize("qscheme", ["per_channel", "per_tensor"])
def test_old_records_apply_as_before(batch, qscheme):
    base = tiny_encoder()
    names = linear_names(base)
    old = {"type": "int8", "version": 1, "data": {  # written before reduce_range / per_token existed
        "qscheme": qscheme, "dtype": "qint8", "engine": "onednn", "quantized": sorted(names[:-1]),
        "input_scale_log2": {n: encode_exponents(k) for n, k in _scales(base).items()}}}
    new, reference = copy.deepcopy(base), copy.deepcopy(base)
    apply_runtime_transforms_(new, [old])
    _old_style(reference, old)
    assert all(m.reduce_range and not m.per_token for m in new.modules() if isinstance(m, DynamicInt8Linear))
    with torch.inference_mode():
        assert torch.equal(new(*batch), reference(*batch))


@pytest.mark.parametrize("scheme", ["per_channel", "per_token"])
def test_replay_is_deterministic(batch, scheme):
    base = tiny_encoder()
    record = _record(base, scheme)
    outs = []
    for _ in range(2):
        model = copy.deepcopy(base)
        apply_runtime_transforms_(model, [record])
        with torch.inference_mode():
            outs.append(model(*batch))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("scheme", ["per_channel", "per_token"])
def test_save_load_gives_in_memory_outputs(tmp_path, batch, minilm_tokenizer, scheme):
    from icd.pipeline.model_store import load_run_encoder, read_icd_model, save_run_encoder

    fp32 = tiny_encoder()
    record = _record(fp32, scheme)
    in_memory = copy.deepcopy(fp32)
    apply_runtime_transforms_(in_memory, [record])
    folder = save_run_encoder(tmp_path, fp32, minilm_tokenizer, ModelSection(), [record])
    loaded = load_run_encoder(folder)
    assert read_icd_model(folder)["runtime_transforms"] == [record]
    assert sorted(quantized_names(loaded)) == record["data"]["quantized"]
    assert sorted(per_token_names(loaded)) == record["data"].get("per_token", [])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*batch), in_memory(*batch), rtol=1e-5, atol=1e-5)  # eager vs sdpa attention


@pytest.mark.parametrize("scheme", ["per_channel", "per_token"])
def test_quantized_encoder_traces_with_torchscript(batch, scheme):
    encoder = tiny_encoder()
    apply_runtime_transforms_(encoder, [_record(encoder, scheme)])
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
        ({"type": "int8", "version": 1, "data": {"quantized": [], "reduce_range": "yes"}}, "reduce_range"),
        ({"type": "int8", "version": 1, "data": {"quantized": [], "qscheme": "per_token", "per_token": ["x"]}},
         "per_token"),
        ({"type": "int8", "version": 1, "data": {"quantized": ["encoder.layer.0.intermediate.dense"],
                                                  "qscheme": "per_channel",
                                                  "per_token": ["encoder.layer.0.intermediate.dense"]}}, "per_token"),
        ({"type": "int8", "version": 1, "data": {"quantized": ["encoder.layer.0.intermediate.dense"],
                                                  "input_scale_log2": {"encoder.layer.0.intermediate.dense": "%%"}}},
         "base64"),
    ],
)
def test_bad_records_raise_artefact_error(record, message):
    with pytest.raises(ArtefactError, match=message):
        apply_runtime_transforms_(tiny_encoder(), [record])
