"""Transforms re-applied when a saved model is loaded: what fp32 safetensors cannot hold.

A run's ``RUN/model/model.safetensors`` already holds the fp32 weights with every permutation, foldable
smoothing scale (V->O) and sparsity mask folded in. Dynamic int8 quantization cannot be stored there, so the run
records it as a provenance record and :func:`apply_runtime_transforms_` replays it, deterministically, at load::

    {"type": "int8", "version": 1,
     "data": {"qscheme": "per_channel", "dtype": "qint8", "engine": "onednn",
              "quantized": ["encoder.layer.0.attention.self.query", ...],
              "input_scale_log2": {"encoder.layer.0.intermediate.dense": "<base64 of int8 exponents>", ...}}}

``quantized`` is the exact, resolved list of Linear names (as in ``encoder.bert.named_modules()``); Linears not
listed stay fp32. ``input_scale_log2`` holds the smoothing that cannot be folded into fp32 weights (see
:mod:`icd.transforms.smoothing`): per input channel ``k``, the weight columns are multiplied by ``2**k`` and the
input by ``2**-k`` (exact in floating point), then the Linear is quantized. Unknown record types raise, so a
model is never silently served differently from how it was made.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from icd.errors import ArtefactError
from icd.model.encoder import Encoder
from icd.transforms.int8 import DEFAULT_ENGINE, QScheme, quantize_linears_
from icd.transforms.smoothing import smooth_linear_input_

INT8_RECORD_TYPE = "int8"
INT8_RECORD_VERSION = 1


def encode_exponents(exponents: torch.Tensor) -> str:
    """int8 exponents as base64 text (compact and exact)."""
    return base64.b64encode(exponents.to(torch.int8).numpy().tobytes()).decode("ascii")


def decode_exponents(text: str) -> torch.Tensor:
    """Inverse of :func:`encode_exponents`; raises ArtefactError on malformed text."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError) as exc:
        raise ArtefactError(f"runtime_transforms: int8 input_scale_log2 is not base64: {exc}") from None
    return torch.from_numpy(np.frombuffer(raw, dtype=np.int8).copy())


def int8_runtime_record(
    quantized: list[str],
    qscheme: QScheme | str = QScheme.PER_CHANNEL,
    input_scale_log2: Mapping[str, torch.Tensor] | None = None,
    engine: str = DEFAULT_ENGINE,
) -> dict[str, Any]:
    """The provenance record that makes :func:`apply_runtime_transforms_` quantize exactly ``quantized``.

    Args:
        quantized: Linear names to quantize.
        qscheme: weight scaling.
        engine: torch quantized engine the weights are packed for at load.
        input_scale_log2: per Linear (a subset of ``quantized``), the smoothing exponents applied before
            quantization.

    Raises:
        ValueError: a smoothed Linear is not in ``quantized``.
    """
    scales = dict(input_scale_log2 or {})
    extra = sorted(set(scales) - set(quantized))
    if extra:
        raise ValueError(f"int8 record: smoothed Linears not quantized: {extra}")
    return {
        "type": INT8_RECORD_TYPE,
        "version": INT8_RECORD_VERSION,
        "data": {
            "qscheme": QScheme(qscheme).value,
            "dtype": "qint8",
            "engine": engine,
            "quantized": sorted(quantized),
            "input_scale_log2": {name: encode_exponents(scales[name]) for name in sorted(scales)},
        },
    }


def _apply_int8_(encoder: Encoder, record: dict[str, Any]) -> None:
    if record.get("version") != INT8_RECORD_VERSION:
        raise ArtefactError(f"runtime_transforms: int8 record version {record.get('version')!r} is not supported")
    data = record.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("quantized"), list):
        raise ArtefactError("runtime_transforms: int8 record needs data.quantized (a list of Linear names)")
    if data.get("dtype", "qint8") != "qint8":
        raise ArtefactError(f"runtime_transforms: int8 data.dtype {data.get('dtype')!r} is not supported (qint8)")
    try:
        scheme = QScheme(data.get("qscheme", QScheme.PER_CHANNEL.value))
    except ValueError:
        raise ArtefactError(f"runtime_transforms: int8 data.qscheme {data.get('qscheme')!r} is unknown") from None
    scales = data.get("input_scale_log2", {})
    if not isinstance(scales, dict) or not set(scales) <= set(data["quantized"]):
        raise ArtefactError("runtime_transforms: int8 data.input_scale_log2 must map quantized Linear names to base64")
    try:
        for name in sorted(scales):
            smooth_linear_input_(encoder.bert, name, decode_exponents(scales[name]))
        quantize_linears_(encoder, list(data["quantized"]), scheme, data.get("engine", DEFAULT_ENGINE))
    except ValueError as exc:
        raise ArtefactError(f"runtime_transforms: {exc}") from None


_APPLIERS = {INT8_RECORD_TYPE: _apply_int8_}


def apply_runtime_transforms_(encoder: Encoder, records: list[dict[str, Any]]) -> None:
    """Replay each runtime record on ``encoder`` in order (in place).

    Raises:
        ArtefactError: a record has an unknown type or version, or names Linears the model does not have.
    """
    for record in records:
        kind = record.get("type") if isinstance(record, dict) else None
        if kind not in _APPLIERS:
            raise ArtefactError(
                f"runtime_transforms: unknown record type {kind!r} (known: {', '.join(sorted(_APPLIERS))})"
            )
        _APPLIERS[kind](encoder, record)
