"""GPTQ rounding of the int8 weights of an NNCF-quantized OpenVINO model: icd's weight rounding in the runtime.

NNCF's static int8 puts each MatMul weight behind a FakeQuantize with one symmetric range per output channel
(255 levels, ``±max |w|``) and rounds every weight to the nearest point of that grid. That is icd's own grid
(:mod:`icd.transforms.int8_rounding`: ``s = max |w| / 127``, codes in ``[-127, 127]``), so icd can round the
weights itself, Hessian-aware (GPTQ), *after* NNCF has placed its quantizers and smoothing:

1. ``nncf.quantize`` with weight compression off keeps each weight as an fp32 constant (already scaled by NNCF's
   SmoothQuant) feeding its FakeQuantize (:func:`weight_quantizers` finds them and checks the grid);
2. the quantized model, run on the calibration texts with every quantized MatMul's activation input as an extra
   output, gives each MatMul the Hessian ``mean x xᵀ`` of the input it really sees — after NNCF's smoothing and
   activation quantization, over real tokens only (:func:`input_hessians`);
3. each weight is replaced by its GPTQ rounding on the same grid (:func:`icd.transforms.int8_rounding.gptq_codes`),
   codes × scale written back as the constant, so the FakeQuantize reproduces exactly those codes; OpenVINO's
   ``compress_quantize_weights_transformation`` then stores them as int8 like NNCF does.

Nothing changes at run time (same graph, same kernels): only which grid point each weight takes. NNCF's fast
bias correction (computed for its nearest rounding) stays as NNCF wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icd.errors import ArtefactError
from icd.transforms.int8_rounding import CODE_MAX, gptq_codes, output_errors, round_nearest

WEIGHT_LEVELS = 2 * CODE_MAX + 1
"""FakeQuantize levels of a symmetric narrow-range int8 weight (NNCF's weight quantizer)."""


@dataclass(frozen=True)
class WeightQuantizer:
    """One MatMul whose weight is an fp32 constant behind a FakeQuantize (an ``ov`` graph's nodes)."""

    matmul: Any
    fake_quantize: Any

    @property
    def constant(self) -> Any:
        return self.fake_quantize.input_value(0).get_node()

    @property
    def name(self) -> str:
        return self.matmul.get_friendly_name()

    @property
    def transpose_b(self) -> bool:
        return bool(self.matmul.get_attributes()["transpose_b"])

    def weight(self) -> np.ndarray:
        """The fp32 weight as ``out × in`` (the MatMul's own layout is ``in × out`` unless ``transpose_b``)."""
        data = np.array(self.constant.get_data(), dtype=np.float32)  # a copy: the constant's data is read-only
        return data if self.transpose_b else np.ascontiguousarray(data.T)

    def check_grid(self, weight: np.ndarray) -> None:
        """The FakeQuantize's grid is icd's (255 levels, range ``±max |w|`` per output channel), or ArtefactError."""
        levels = self.fake_quantize.get_attributes()["levels"]
        low, high = (np.asarray(self.fake_quantize.input_value(i).get_node().get_data(), dtype=np.float32).reshape(-1)
                     for i in (1, 2))
        absmax = np.abs(weight).max(axis=1)
        if levels != WEIGHT_LEVELS or high.size != absmax.size or not (
                np.allclose(high, absmax, rtol=1e-5, atol=1e-12) and np.allclose(low, -high, rtol=1e-6, atol=0)):
            raise ArtefactError(f"GPTQ weight rounding: the weight quantizer of {self.name} is not a symmetric "
                                f"per-output-channel int8 grid ({levels} levels); export with weight_rounding "
                                f"'nearest'")

    def set_weight(self, weight: np.ndarray) -> None:
        """Replace the constant by ``weight`` (``out × in``, back in the MatMul's layout)."""
        from openvino import opset13

        data = weight if self.transpose_b else weight.T
        replacement = opset13.constant(np.ascontiguousarray(data, dtype=np.float32))
        self.fake_quantize.input(0).replace_source_output(replacement.output(0))


def weight_quantizers(model) -> list[WeightQuantizer]:
    """Every MatMul of ``model`` whose second input is ``Constant → FakeQuantize`` (NNCF without weight
    compression), in graph order."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        quantizer = op.input_value(1).get_node()
        if quantizer.get_type_name() != "FakeQuantize":
            continue
        if quantizer.input_value(0).get_node().get_type_name() == "Constant":
            found.append(WeightQuantizer(op, quantizer))
    return found


def input_hessians(model, quantizers: list[WeightQuantizer], batches: Iterable[Mapping[str, np.ndarray]],
                   properties: Mapping[str, str]) -> list[torch.Tensor]:
    """Per quantizer, ``mean x xᵀ`` (float64) of its MatMul's activation input over the real tokens of ``batches``
    (``{"input_ids", "attention_mask"}``; padding positions never count), the quantized model compiled with
    ``properties``."""
    import openvino as ov

    from icd.runtimes.openvino import compile_model

    taps = [q.matmul.input_value(0) for q in quantizers]
    probe = ov.Model(list(model.outputs) + taps, model.get_parameters(), "icd_gptq_hessians")
    compiled = compile_model(probe, properties)
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    outputs = compiled.outputs[len(model.outputs):]
    sums: list[torch.Tensor | None] = [None] * len(taps)
    tokens = 0
    for batch in batches:
        real = np.asarray(batch["attention_mask"]).reshape(-1) != 0
        result = request.infer(dict(zip(names, (batch["input_ids"], batch["attention_mask"]))))
        for index, port in enumerate(outputs):
            x = np.asarray(result[port])
            rows = x.reshape(-1, x.shape[-1])
            if rows.shape[0] == real.size:
                rows = rows[real]
            rows = torch.from_numpy(rows.astype(np.float64))
            gram = rows.T @ rows
            sums[index] = gram if sums[index] is None else sums[index] + gram
        tokens += int(real.sum())
    if not tokens:
        raise ArtefactError("GPTQ weight rounding: the calibration batches have no real tokens")
    return [s / tokens for s in sums]


def round_weights_gptq_(model, batches: Iterable[Mapping[str, np.ndarray]], properties: Mapping[str, str]
                        ) -> dict[str, Any]:
    """GPTQ-round every int8 weight of ``model`` (NNCF-quantized, weights not compressed) in place; the report:
    per MatMul the relative output error ``tr(D H Dᵀ) / tr(W H Wᵀ)`` rounded to nearest and with GPTQ."""
    quantizers = weight_quantizers(model)
    if not quantizers:
        raise ArtefactError("GPTQ weight rounding: the quantized model has no fp32 weight behind a FakeQuantize "
                            "(was it quantized with weight compression on?)")
    weights = [q.weight() for q in quantizers]
    for quantizer, weight in zip(quantizers, weights):
        quantizer.check_grid(weight)
    hessians = input_hessians(model, quantizers, batches, properties)
    errors: dict[str, list[float]] = {}
    for quantizer, weight, hessian in zip(quantizers, weights, hessians):
        w = torch.from_numpy(weight)
        codes, scales = gptq_codes(w, hessian)
        errors[quantizer.name] = [round(e, 7) for e in output_errors(w, hessian, [round_nearest(w), (codes, scales)])]
        quantizer.set_weight((codes.double() * scales.double().unsqueeze(1)).numpy())
    nearest, gptq = (float(np.mean([e[i] for e in errors.values()])) for i in (0, 1))
    return {"weight_rounding": "gptq", "matmuls": len(errors), "rel_output_error_nearest_mean": round(nearest, 7),
            "rel_output_error_gptq_mean": round(gptq, 7), "rel_output_error": errors}


def compress_weights_(model) -> None:
    """Store the FakeQuantize'd fp32 weights as int8 constants (what ``nncf.quantize`` does by default)."""
    from openvino._offline_transformations import compress_quantize_weights_transformation

    compress_quantize_weights_transformation(model)
