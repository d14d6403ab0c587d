"""OpenVINO int8 through NNCF, with icd's decisions passed as NNCF's arguments (docs/int8.md).

A recipe says which of icd's decisions reach ``nncf.quantize``:

* ``icd_smoothing``: quantize icd's *smoothed* graph — the run's per-Linear SmoothQuant exponents (chosen by icd
  from the measured int8 error of each Linear) are in the weights, and the input multiply by ``2**-k`` is an
  explicit node before the MatMul, so NNCF's activation quantizer sees icd's flattened inputs;
* ``nncf_smooth_quant``: NNCF's own SmoothQuant on top (off when icd's is used: one smoothing, not two);
* ``ignore_per_token``: leave the Linears icd quantizes per token (its hardest: FFN-out, reading GELU output)
  in fp32 via ``IgnoredScope`` — NNCF has only per-tensor activation scales;
* ``keep_icd_fp32``: the Linears icd kept fp32 stay fp32;
* ``preset``: NNCF's ``QuantizationPreset`` (``mixed``: asymmetric activations);
* ``calibration_texts``: the run's calibration texts (never held-out ones), one text per calibration sample
  (no padding tokens in the activation statistics);
* ``inference_precision``: the CPU plugin's precision for what stays unquantized (``f32``, or ``bf16`` on CPUs
  with AVX512-BF16 / AMX);
* ``ignored_weight_only``: the Linears left out of static int8 (``ignore_per_token``) get int8 *weights*
  (``nncf.compress_weights``, INT8_ASYM, per output channel) instead of staying fp32;
* ``dynamic_quantization_group_size``: the CPU plugin quantizes the activations of those weight-only MatMuls at
  run time per group of this many channels of each token — OpenVINO's counterpart of icd's per-token activation
  scales on the same Linears (``DYNAMIC_QUANTIZATION_GROUP_SIZE``; None = off).

:data:`DEFAULT_RECIPE` is the one ``openvino:int8`` exports; bench/runtimes.py measures the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from icd.runtimes.onnx_graph import matmul_nodes
from icd.runtimes.source import ModelSource


@dataclass(frozen=True)
class OpenVinoInt8Recipe:
    """Which of icd's decisions NNCF gets (see the module docstring)."""

    name: str = "icd_smoothing"
    icd_smoothing: bool = True
    nncf_smooth_quant: bool = False
    ignore_per_token: bool = False
    keep_icd_fp32: bool = True
    preset: str = "mixed"
    calibration_texts: int = 512
    inference_precision: str = "f32"
    ignored_weight_only: bool = False
    dynamic_quantization_group_size: int | None = None

    def compile_properties(self) -> dict[str, str]:
        """CPU plugin properties this recipe needs at compile time (besides threads and precision)."""
        if self.dynamic_quantization_group_size is None:
            return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
        return {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(self.dynamic_quantization_group_size)}

    def ignored_linears(self, source: ModelSource) -> list[str]:
        _, kept = source.int8_linears()
        ignored = list(kept) if self.keep_icd_fp32 else []
        if self.ignore_per_token:
            ignored += [n for n in source.per_token_linears() if n not in ignored]
        return ignored

    def describe(self, source: ModelSource) -> dict[str, Any]:
        """The recipe as recorded in provenance (with the Linears it left fp32)."""
        return {"method": "nncf.quantize", "model_type": "TRANSFORMER", **asdict(self),
                "icd_smoothing_applied": self.icd_smoothing and source.int8_record is not None,
                "fp32_linears": self.ignored_linears(source)}


RECIPES: dict[str, OpenVinoInt8Recipe] = {
    "nncf_default": OpenVinoInt8Recipe("nncf_default", icd_smoothing=False, nncf_smooth_quant=True,
                                       keep_icd_fp32=False, preset="performance"),
    "nncf_mixed": OpenVinoInt8Recipe("nncf_mixed", icd_smoothing=False, nncf_smooth_quant=True, keep_icd_fp32=False),
    "icd_smoothing": OpenVinoInt8Recipe("icd_smoothing"),
    "icd_smoothing_plus_nncf_sq": OpenVinoInt8Recipe("icd_smoothing_plus_nncf_sq", nncf_smooth_quant=True),
    "icd_smoothing_ffn_out_fp32": OpenVinoInt8Recipe("icd_smoothing_ffn_out_fp32", ignore_per_token=True),
    "nncf_ffn_out_fp32": OpenVinoInt8Recipe("nncf_ffn_out_fp32", icd_smoothing=False, nncf_smooth_quant=True,
                                            ignore_per_token=True),
    "icd_smoothing_bf16": OpenVinoInt8Recipe("icd_smoothing_bf16", inference_precision="bf16"),
    "icd_smoothing_ffn_out_bf16": OpenVinoInt8Recipe("icd_smoothing_ffn_out_bf16", ignore_per_token=True,
                                                     inference_precision="bf16"),
    "icd_smoothing_ffn_out_weight_int8": OpenVinoInt8Recipe("icd_smoothing_ffn_out_weight_int8", ignore_per_token=True,
                                                            ignored_weight_only=True),
    "icd_smoothing_ffn_out_per_token": OpenVinoInt8Recipe("icd_smoothing_ffn_out_per_token", ignore_per_token=True,
                                                          ignored_weight_only=True,
                                                          dynamic_quantization_group_size=32),
    "nncf_ffn_out_bf16": OpenVinoInt8Recipe("nncf_ffn_out_bf16", icd_smoothing=False, nncf_smooth_quant=True,
                                            ignore_per_token=True, inference_precision="bf16"),
    "nncf_ffn_out_per_token": OpenVinoInt8Recipe("nncf_ffn_out_per_token", icd_smoothing=False,
                                                 nncf_smooth_quant=True, ignore_per_token=True,
                                                 ignored_weight_only=True, dynamic_quantization_group_size=32),
}
DEFAULT_RECIPE = "nncf_ffn_out_fp32"
"""Decided by bench/results/runtimes.json (docs/int8.md, "Runtimes"): the most faithful int8 recipe measured —
NNCF's own SmoothQuant, with the Linears icd quantizes per token (FFN-out) and the ones icd keeps fp32 left out of
static int8."""


def default_recipe(source: ModelSource) -> OpenVinoInt8Recipe:
    """The recipe ``openvino:int8`` exports (:data:`DEFAULT_RECIPE`, calibration texts capped by the run's)."""
    recipe = RECIPES[DEFAULT_RECIPE]
    return replace(recipe, calibration_texts=min(recipe.calibration_texts, len(source.calibration_texts)))


def quantize_with_recipe(model, onnx_path: Path, source: ModelSource, recipe: OpenVinoInt8Recipe):
    """``nncf.quantize`` of the converted ``model`` (from ``onnx_path``) as ``recipe`` says."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    ignored = recipe.ignored_linears(source)
    names = [node for nodes in matmul_nodes(onnx_path, ignored).values() for node in nodes] if ignored else []
    samples = source.calibration_inputs(recipe.calibration_texts, batch_size=1)
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters() if recipe.nncf_smooth_quant
        else AdvancedSmoothQuantParameters(matmul=-1))
    quantized = nncf.quantize(
        model, nncf.Dataset(samples), preset=nncf.QuantizationPreset(recipe.preset),
        model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(names=names) if names else None, advanced_parameters=advanced,
    )
    if not (recipe.ignored_weight_only and names):
        return quantized
    others = [op.get_friendly_name() for op in quantized.get_ops()
              if op.get_type_name() in ("MatMul", "Gather") and op.get_friendly_name() not in names]
    return nncf.compress_weights(quantized, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                 ignored_scope=nncf.IgnoredScope(names=others, validate=False))
