"""Transforms re-applied when a saved model is loaded: what fp32 safetensors cannot hold.

A run's ``RUN/model/model.safetensors`` already holds the fp32 weights with every permutation, foldable
smoothing scale (V->O) and sparsity mask folded in. Dynamic int8 quantization cannot be stored there, so the run
records it as a provenance record and :func:`apply_runtime_transforms_` replays it, deterministically, at load::

    {"type": "int8", "version": 1,
     "data": {"qscheme": "per_token", "dtype": "qint8", "engine": "onednn", "reduce_range": false,
              "quantized": ["encoder.layer.0.attention.self.query", ...],
              "per_token": ["encoder.layer.0.output.dense", ...],
              "input_scale_log2": {"encoder.layer.0.intermediate.dense": "<base64 of int8 exponents>", ...}}}

``quantized`` is the exact, resolved list of Linear names (as in ``encoder.bert.named_modules()``); Linears not
listed stay fp32. ``qscheme`` (:class:`icd.transforms.int8.QScheme`): with ``per_token``, the Linears listed in
``per_token`` (a subset of ``quantized``; absent = all) get one activation scale per token, the others one per
call; weights are per output channel except with ``per_tensor``. ``reduce_range`` true = 7-bit activations;
records written before it existed have no such key and keep their 7-bit behaviour (``qscheme`` per_channel or
per_tensor), so an old run is served exactly as it was measured.

``fp32_channels`` (optional): per Linear, the input channel indices multiplied in fp32 outside the int8 product
(:class:`icd.transforms.int8_kernels.DynamicInt8Linear`); absent = none.

``weight_rounding`` (optional, absent = ``nearest``): ``gptq`` when icd rounded the weights itself
(:mod:`icd.transforms.int8_rounding`); the int8 codes and per-channel scales of every quantized Linear then live
beside the fp32 weights in ``int8_weights.safetensors`` (``<name>.codes`` int8, ``<name>.scales`` float32) and are
packed as they are, while ``model.safetensors`` keeps the unrounded fp32 weights.

``input_scale_log2`` holds the smoothing that cannot be folded into fp32 weights (see
:mod:`icd.transforms.smoothing`): per input channel ``k``, the weight columns are multiplied by ``2**k`` and the
input by ``2**-k`` (exact in floating point), then the Linear is quantized. Unknown record types raise, so a
model is never silently served differently from how it was made.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from icd.errors import ArtefactError
from icd.model.encoder import Encoder
from icd.transforms.int8 import DEFAULT_ENGINE, QScheme, quantize_linears_
from icd.transforms.smoothing import smooth_linear_input_

LEGACY_REDUCE_RANGE = True
"""``reduce_range`` of records without the key (torch's dynamic Linear always used 7-bit activations)."""

INT8_RECORD_TYPE = "int8"
INT8_RECORD_VERSION = 1

WEIGHT_ROUNDINGS = ("nearest", "gptq")
"""``data.weight_rounding`` values (absent = nearest)."""

INT8_WEIGHTS_FILE = "int8_weights.safetensors"
"""Beside a saved model's weights: icd's int8 codes and scales when a record's ``weight_rounding`` is ``gptq``."""


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
    reduce_range: bool = LEGACY_REDUCE_RANGE,
    per_token: Sequence[str] | None = None,
    fp32_channels: Mapping[str, torch.Tensor] | None = None,
    weight_rounding: str = "nearest",
) -> dict[str, Any]:
    """The provenance record that makes :func:`apply_runtime_transforms_` quantize exactly ``quantized``.

    Args:
        quantized: Linear names to quantize.
        qscheme: weight / activation scaling (:class:`icd.transforms.int8.QScheme`).
        engine: torch quantized engine the weights are packed for at load.
        input_scale_log2: per Linear (a subset of ``quantized``), the smoothing exponents applied before
            quantization.
        reduce_range: 7-bit activations (else 8-bit).
        per_token: with ``qscheme`` per_token, the Linears quantized per token (a subset of ``quantized``;
            None = all).
        fp32_channels: per Linear (a subset of ``quantized``), the input channels multiplied in fp32 outside the
            int8 product (absent from the record when there are none).
        weight_rounding: ``nearest`` (torch rounds the saved fp32 weights at load; absent from the record) or
            ``gptq`` (the packed weights are icd's codes, saved beside the fp32 weights as
            ``int8_weights.safetensors`` and held by the model as ``Encoder.int8_weights``).

    Raises:
        ValueError: a smoothed, per-token or fp32-channel Linear is not in ``quantized``, or per-token Linears with
            another qscheme.
    """
    scheme = QScheme(qscheme)
    scales = dict(input_scale_log2 or {})
    extra = sorted(set(scales) - set(quantized))
    if extra:
        raise ValueError(f"int8 record: smoothed Linears not quantized: {extra}")
    data: dict[str, Any] = {
        "qscheme": scheme.value,
        "dtype": "qint8",
        "engine": engine,
        "reduce_range": bool(reduce_range),
        "quantized": sorted(quantized),
        "input_scale_log2": {name: encode_exponents(scales[name]) for name in sorted(scales)},
    }
    if scheme == QScheme.PER_TOKEN:
        tokens = sorted(quantized if per_token is None else per_token)
        outside = sorted(set(tokens) - set(quantized))
        if outside:
            raise ValueError(f"int8 record: per-token Linears not quantized: {outside}")
        data["per_token"] = tokens
    elif per_token:
        raise ValueError(f"int8 record: per-token Linears need qscheme 'per_token', not {scheme.value!r}")
    channels = {name: sorted(int(c) for c in index) for name, index in (fp32_channels or {}).items() if len(index)}
    extra = sorted(set(channels) - set(quantized))
    if extra:
        raise ValueError(f"int8 record: fp32 channels of Linears not quantized: {extra}")
    if channels:
        data["fp32_channels"] = {name: channels[name] for name in sorted(channels)}
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise ValueError(f"int8 record: weight_rounding {weight_rounding!r} is not one of {WEIGHT_ROUNDINGS}")
    if weight_rounding != "nearest":
        data["weight_rounding"] = weight_rounding
    return {"type": INT8_RECORD_TYPE, "version": INT8_RECORD_VERSION, "data": data}


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
    reduce_range = data.get("reduce_range", LEGACY_REDUCE_RANGE)
    if not isinstance(reduce_range, bool):
        raise ArtefactError(f"runtime_transforms: int8 data.reduce_range must be true or false, got {reduce_range!r}")
    per_token = data.get("per_token")
    if per_token is not None and (not isinstance(per_token, list) or not set(per_token) <= set(data["quantized"])):
        raise ArtefactError("runtime_transforms: int8 data.per_token must list quantized Linear names")
    channels = _fp32_channels(data)
    codes = _weight_codes(encoder, data)
    try:
        for name in sorted(scales):
            smooth_linear_input_(encoder.bert, name, decode_exponents(scales[name]))
        quantize_linears_(encoder, list(data["quantized"]), scheme, data.get("engine", DEFAULT_ENGINE),
                          reduce_range=reduce_range, per_token=per_token, fp32_channels=channels,
                          weight_codes=codes)
    except ValueError as exc:
        raise ArtefactError(f"runtime_transforms: {exc}") from None


def _weight_codes(encoder: Encoder, data: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The model's int8 codes when the record says icd rounded the weights (GPTQ), else None."""
    rounding = data.get("weight_rounding", "nearest")
    if rounding not in WEIGHT_ROUNDINGS:
        raise ArtefactError(f"runtime_transforms: int8 data.weight_rounding {rounding!r} is not one of "
                            f"{', '.join(WEIGHT_ROUNDINGS)}")
    if rounding == "nearest":
        return None
    codes = getattr(encoder, "int8_weights", None) or {}
    missing = sorted(set(data["quantized"]) - set(codes))
    if missing:
        raise ArtefactError(f"runtime_transforms: int8 weight_rounding {rounding!r} needs the int8 codes of every "
                            f"quantized Linear ({INT8_WEIGHTS_FILE} beside the model's weights); missing for "
                            f"{missing[:3]}{'...' if len(missing) > 3 else ''}")
    return codes


def _fp32_channels(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    channels = data.get("fp32_channels", {})
    valid = isinstance(channels, dict) and set(channels) <= set(data["quantized"]) and all(
        isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v)
        for v in channels.values())
    if not valid:
        raise ArtefactError("runtime_transforms: int8 data.fp32_channels must map quantized Linear names to lists of "
                            "input channel indices")
    return {name: torch.tensor(index, dtype=torch.int64) for name, index in channels.items()}


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
