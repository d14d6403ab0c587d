"""Request inputs: real tokenized text or random ids, shaped as the model's metadata declares.

Inputs are matched to roles by name (``input_ids``, ``attention_mask``, ``token_type_ids``; a model with one
input takes the ids). Dtypes come from the metadata (INT64 or INT32). The shape is checked against the declared
one before the run: a mismatch is a one-line :class:`icd.errors.UserError` ("bad shape").
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np

from icd.errors import UserError
from icd.load.settings import InputSource, LoadSettings
from icd.load.target import ModelInfo, TensorSpec

# Synthetic ids are drawn from the MiniLM/BERT uncased vocabulary's ordinary word-piece range.
RANDOM_ID_LOW = 1000
RANDOM_ID_HIGH = 30000
CLS_ID = 101
SEP_ID = 102
_DTYPES = {"INT64": np.int64, "INT32": np.int32}


@dataclass(frozen=True)
class TokenBatch:
    """One request's rows: ``input_ids`` and ``attention_mask`` of shape ``[batch, seq]`` (int64)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def token_batches(settings: LoadSettings) -> list[TokenBatch]:
    """``settings.pool_size`` batches of ``batch_size`` rows × ``input_shape`` tokens (seeded)."""
    n_rows = settings.pool_size * settings.batch_size
    if settings.inputs == InputSource.RANDOM:
        rng = np.random.default_rng(settings.seed)
        ids = rng.integers(RANDOM_ID_LOW, RANDOM_ID_HIGH, size=(n_rows, settings.input_shape), dtype=np.int64)
        ids[:, 0] = CLS_ID
        ids[:, -1] = SEP_ID
        mask = np.ones_like(ids)
    else:
        ids, mask = _tokenized_text(n_rows, settings.input_shape, settings.seed)
    b = settings.batch_size
    return [TokenBatch(ids[i * b:(i + 1) * b], mask[i * b:(i + 1) * b]) for i in range(settings.pool_size)]


def _tokenized_text(n_rows: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from icd.config.schema import ModelSection
    from icd.data.corpus import stdlib_docstrings
    from icd.model.loader import load_tokenizer

    texts = list(stdlib_docstrings())
    rng = random.Random(seed)
    chosen = [texts[rng.randrange(len(texts))] for _ in range(n_rows)]
    tokenizer = load_tokenizer(ModelSection())
    enc = tokenizer(chosen, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _role(spec: TensorSpec, n_inputs: int, model: str) -> str:
    lowered = spec.name.lower()
    for role in ("input_ids", "attention_mask", "token_type_ids"):
        if role in lowered:
            return role
    if n_inputs == 1:
        return "input_ids"
    raise UserError(f"model {model!r}: input {spec.name!r} is not input_ids / attention_mask / token_type_ids")


def check_shapes(info: ModelInfo, settings: LoadSettings) -> None:
    """Raise ``UserError`` ("bad shape") when ``batch_size`` × ``input_shape`` does not fit the declared inputs."""
    b, s = settings.batch_size, settings.input_shape
    if info.max_batch_size is not None and info.max_batch_size > 0 and b > info.max_batch_size:
        raise UserError(f"bad shape: model {info.name!r} max_batch_size is {info.max_batch_size}; --batch-size {b} too big")
    for spec in info.inputs:
        if spec.datatype not in _DTYPES:
            raise UserError(f"model {info.name!r}: input {spec.name!r} has datatype {spec.datatype}; expected INT64 or INT32")
        dims = spec.shape
        if info.max_batch_size and len(dims) == 1:
            dims = (-1, *dims)
        if len(dims) != 2 or dims[0] not in (-1, b) or dims[1] not in (-1, s):
            raise UserError(
                f"bad shape: model {info.name!r} input {spec.name!r} declares {list(spec.shape)}; "
                f"requests would be [{b}, {s}] (--batch-size {b} --input-shape {s})"
            )


def named_arrays(info: ModelInfo, batch: TokenBatch) -> dict[str, np.ndarray]:
    """The model's inputs for one request, by declared name and dtype."""
    out = {}
    for spec in info.inputs:
        role = _role(spec, len(info.inputs), info.name)
        if role == "input_ids":
            arr = batch.input_ids
        elif role == "attention_mask":
            arr = batch.attention_mask
        else:
            arr = np.zeros_like(batch.input_ids)
        out[spec.name] = np.ascontiguousarray(arr, dtype=_DTYPES[spec.datatype])
    return out


def infer_body(arrays: dict[str, np.ndarray]) -> bytes:
    """KServe-v2 JSON inference request body."""
    inputs = [
        {"name": name, "shape": list(arr.shape), "datatype": "INT64" if arr.dtype == np.int64 else "INT32",
         "data": arr.ravel().tolist()}
        for name, arr in arrays.items()
    ]
    return json.dumps({"inputs": inputs}, separators=(",", ":")).encode()


def http_request_bytes(host: str, port: int, model: str, body: bytes) -> bytes:
    """A complete keep-alive ``POST /v2/models/{model}/infer`` HTTP/1.1 request."""
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
