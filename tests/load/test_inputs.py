from __future__ import annotations

import json

import numpy as np
import pytest

from icd.errors import UserError
from icd.load import LoadSettings
from icd.load.inputs import check_shapes, http_request_bytes, infer_body, named_arrays, token_batches
from icd.load.report import check_writable
from icd.load.target import ModelInfo, TensorSpec


def _info(shape=(-1, -1), dtype="INT64", max_batch=8, names=("input_ids", "attention_mask")) -> ModelInfo:
    return ModelInfo("m", tuple(TensorSpec(n, dtype, shape) for n in names), (), max_batch)


def test_random_batches_have_the_requested_shape():
    batches = token_batches(LoadSettings(inputs="random", batch_size=3, input_shape=16, pool_size=4))
    assert len(batches) == 4
    assert batches[0].input_ids.shape == (3, 16) and batches[0].attention_mask.min() == 1
    assert (batches[0].input_ids[:, 0] == 101).all()


@pytest.mark.parametrize(("info", "settings", "message"), [
    (_info(shape=(-1, 128)), dict(input_shape=64), "bad shape"),
    (_info(max_batch=4), dict(batch_size=8), "max_batch_size is 4"),
    (_info(dtype="FP32"), {}, "datatype FP32"),
    (_info(shape=(-1, -1, -1)), {}, "bad shape"),
])
def test_shape_mismatch_is_a_user_error(info, settings, message):
    with pytest.raises(UserError, match=message):
        check_shapes(info, LoadSettings(inputs="random", **settings))


def test_metadata_without_batch_dim_and_int32_inputs():
    info = _info(shape=(-1,), dtype="INT32", names=("input_ids", "attention_mask", "token_type_ids"))
    settings = LoadSettings(inputs="random", batch_size=2, input_shape=8, pool_size=1)
    check_shapes(info, settings)
    arrays = named_arrays(info, token_batches(settings)[0])
    assert [a.dtype for a in arrays.values()] == [np.int32] * 3
    assert not arrays["token_type_ids"].any()
    body = json.loads(infer_body(arrays))
    assert body["inputs"][0]["shape"] == [2, 8] and body["inputs"][0]["datatype"] == "INT32"
    raw = http_request_bytes("h", 1, "m", infer_body(arrays))
    assert raw.startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n") and raw.endswith(infer_body(arrays))


def test_unknown_input_name_is_a_user_error():
    info = _info(names=("input_ids", "pixels"))
    with pytest.raises(UserError, match="pixels"):
        named_arrays(info, token_batches(LoadSettings(inputs="random", pool_size=1, input_shape=4))[0])


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert not (tmp_path / "new").exists()  # nothing created by the check
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_writable(blocker / "r.json")
    with pytest.raises(UserError, match="is a directory"):
        check_writable(tmp_path)
