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
  scales on the same Linears (``DYNAMIC_QUANTIZATION_GROUP_SIZE``; None = off);
* ``fp32_ffn_neurons``: per layer, this many FFN neurons (the widest ranges on the calibration texts) go to a
  branch of their own, split by weights (:func:`icd.runtimes.outlier_split.split_ffn_neurons_`), that stays fp32 —
  the rest of FFN-out gets static int8 with the narrower range of the kept neurons (0 = no split); a layer with no
  more neurons than that (compacted) keeps its FFN-out fp32 whole
  (:func:`icd.runtimes.outlier_split.split_ffn_outliers_`);
* ``fp32_input_channels``: per Linear of ``fp32_input_roles`` (of those reading the residual stream: query, key,
  value, ffn_in), this many input channels (the widest ranges) are masked out of its int8 product and added back by
  a small fp32 Linear (:func:`icd.runtimes.outlier_split.split_input_channels_`; 0 = none);
* ``smooth_quant_alpha``: NNCF's SmoothQuant exponent for MatMuls (None = NNCF's default);
* ``attention_matmuls_fp32``: which of attention's two activation × activation products stay fp32 — ``scores``
  (``Q·Kᵀ``), ``values`` (``softmax·V``); NNCF's transformer scheme quantizes them (empty = both int8);
* ``fused_attention``: export the model with transformers' eager attention (MatMul, scale, additive mask, Softmax,
  MatMul) instead of its default SDPA, a pattern OpenVINO's conversion fuses into one ``ScaledDotProductAttention``
  operation per layer; NNCF then quantizes its query and key inputs and the product with V stays in the fused
  kernel. Faster than the SDPA graph (bench/results/ov_profile.json). The fused graph has no product node of its own
  to leave out: there ``attention_matmuls_fp32`` naming ``scores`` leaves the fused operation's query and key
  unquantized (``IgnoredScope`` of its type) — Q·Kᵀ in fp32 inside the kernel — and ``values`` needs nothing (the
  kernel's V is never quantized). Where OpenVINO does not fuse the eager attention (MPNet: its relative position
  bias sits between the MatMuls), the named products' MatMuls stay fp32 as in the unfused recipes;
* ``unsigned_ffn_out``: shift the FFN output Linear's input by minus the activation's floor (GELU: 0.17), folded
  into its bias (:mod:`icd.runtimes.unsigned_shift`): never negative, so a symmetric quantizer of it (``performance``
  preset) is unsigned — the asymmetric grid at the symmetric kernel's speed;
* ``centered_layer_norms``: the LayerNorm outputs that Linears read (query, key, value, the FFN input) centred per
  channel on their midpoints over the calibration texts, by weight edits alone — LayerNorm β, the readers' biases,
  the residual writer's bias (:mod:`icd.runtimes.input_centering`): each channel's range symmetric around 0, for
  the symmetric quantizers of the ``performance`` preset; no operation added;
* ``weight_rounding``: ``nearest`` (NNCF's) or ``gptq`` — icd rounds the int8 weights itself on NNCF's grid,
  Hessian-aware, with the Hessians of the quantized model's own MatMul inputs on the calibration texts
  (:mod:`icd.runtimes.openvino_gptq`); same graph, same speed, a longer export.

The two splits are LLM.int8()'s fp32 outliers carried into a static int8 graph; neither goes with
``icd_smoothing`` (which rewrites the same Linears) or with ``ignore_per_token`` (which leaves FFN-out fp32 whole).
Nor do the two shifts (``unsigned_ffn_out``, ``centered_layer_norms``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from icd.errors import ArtefactError
from icd.runtimes.onnx_graph import ATTENTION_PRODUCTS, activation_matmuls, matmul_nodes, with_eager_attention
from icd.runtimes.openvino import FUSED_ATTENTION, fused_attention_ops
from icd.runtimes.source import ModelSource
from icd.transforms.runtime import WEIGHT_ROUNDINGS


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
    fp32_ffn_neurons: int = 0
    fp32_input_channels: int = 0
    fp32_input_roles: tuple[str, ...] = ("query", "key", "value", "ffn_in")
    smooth_quant_alpha: float | None = None
    attention_matmuls_fp32: tuple[str, ...] = ()
    fused_attention: bool = False
    weight_rounding: str = "nearest"
    unsigned_ffn_out: bool = False
    centered_layer_norms: bool = False

    def __post_init__(self) -> None:
        for field_name in ("fp32_ffn_neurons", "fp32_input_channels"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"recipe {self.name}: {field_name} must be >= 0, got {getattr(self, field_name)}")
        for field_name in ("fp32_ffn_neurons", "fp32_input_channels", "unsigned_ffn_out", "centered_layer_norms"):
            if getattr(self, field_name) and (self.icd_smoothing or self.ignore_per_token):
                raise ValueError(f"recipe {self.name}: {field_name} rewrites Linears that icd_smoothing rewrites and "
                                 f"ignore_per_token leaves fp32 whole; use it without them")
        products = self.attention_matmuls_fp32
        if not set(products) <= set(ATTENTION_PRODUCTS) or len(set(products)) != len(products):
            raise ValueError(f"recipe {self.name}: attention_matmuls_fp32 takes distinct names of "
                             f"{list(ATTENTION_PRODUCTS)}, got {list(products)}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(f"recipe {self.name}: weight_rounding must be one of {list(WEIGHT_ROUNDINGS)}, "
                             f"got {self.weight_rounding!r}")
        if self.weight_rounding == "gptq" and self.ignored_weight_only:
            raise ValueError(f"recipe {self.name}: weight_rounding 'gptq' rounds static int8 weights; "
                             f"ignored_weight_only adds weight-only ones it does not cover")
        if self.smooth_quant_alpha is not None and not (0.0 < self.smooth_quant_alpha <= 1.0):
            raise ValueError(f"recipe {self.name}: smooth_quant_alpha must be in (0, 1], got {self.smooth_quant_alpha}")

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


def _outliers(name: str, **fields: Any) -> OpenVinoInt8Recipe:
    """An outlier-split recipe: NNCF's SmoothQuant on the plain fp32 graph (no icd smoothing, FFN-out not left out)."""
    return OpenVinoInt8Recipe(name, **{"icd_smoothing": False, "nncf_smooth_quant": True, "keep_icd_fp32": False,
                                       **fields})


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
    **{f"nncf_fp32_ffn{count}": _outliers(f"nncf_fp32_ffn{count}", fp32_ffn_neurons=count) for count in (8, 16, 32)},
    "nncf_fp32_ffn32_sq075": _outliers("nncf_fp32_ffn32_sq075", fp32_ffn_neurons=32, smooth_quant_alpha=0.75),
    "icd_outliers": _outliers("icd_outliers", keep_icd_fp32=True, fp32_ffn_neurons=32, smooth_quant_alpha=0.75,
                              attention_matmuls_fp32=ATTENTION_PRODUCTS),
    "icd_outliers_bf16": _outliers("icd_outliers_bf16", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                   smooth_quant_alpha=0.75, attention_matmuls_fp32=ATTENTION_PRODUCTS,
                                   inference_precision="bf16"),
    "icd_outliers_scores_fp32": _outliers("icd_outliers_scores_fp32", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                          smooth_quant_alpha=0.75, attention_matmuls_fp32=("scores",)),
    "icd_outliers_ffn_in8": _outliers("icd_outliers_ffn_in8", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                      fp32_input_channels=8, fp32_input_roles=("ffn_in",), smooth_quant_alpha=0.75,
                                      attention_matmuls_fp32=ATTENTION_PRODUCTS),
    "icd_outliers_qkv_ffn_in8": _outliers("icd_outliers_qkv_ffn_in8", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                          fp32_input_channels=8, smooth_quant_alpha=0.75,
                                          attention_matmuls_fp32=ATTENTION_PRODUCTS),
    "icd_outliers_fused": _outliers("icd_outliers_fused", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                    smooth_quant_alpha=0.75, fused_attention=True),
    "icd_outliers_fused_fp32": _outliers("icd_outliers_fused_fp32", keep_icd_fp32=True, fp32_ffn_neurons=32,
                                         smooth_quant_alpha=0.75, fused_attention=True,
                                         attention_matmuls_fp32=ATTENTION_PRODUCTS),
}
RECIPES.update({f"{name}_sym": replace(RECIPES[name], name=f"{name}_sym", preset="performance", unsigned_ffn_out=True)
                for name in ("icd_outliers_fused", "icd_outliers_fused_fp32")})
"""``<recipe>_sym``: the recipe with NNCF's ``performance`` preset — symmetric activation quantizers, where ``mixed``
gives asymmetric ones with zero points — and the FFN output's input shifted non-negative (``unsigned_ffn_out``), so
its symmetric quantizer is unsigned. On CPUs with AMX the CPU plugin runs symmetric int8 MatMuls on its
``FullyConnectedQuantizedLegacy`` kernel and asymmetric ones on its slower ``FullyConnected`` one
(bench/results/ov_profile_sym_amx.json, docs/int8.md, "Symmetric quantizers for AMX CPUs")."""
RECIPES["icd_outliers_fused_fp32_sym_centered"] = replace(RECIPES["icd_outliers_fused_fp32_sym"],
                                                          name="icd_outliers_fused_fp32_sym_centered",
                                                          centered_layer_norms=True)
"""``icd_outliers_fused_fp32_sym`` with the LayerNorm outputs that Linears read centred per channel
(``centered_layer_norms``): their symmetric quantizers cover the channels' spans, not their offsets (docs/int8.md,
"Centred LayerNorm outputs")."""
RECIPES.update({f"{name}_gptq": replace(RECIPES[name], name=f"{name}_gptq", weight_rounding="gptq")
                for name in ("icd_outliers", "icd_outliers_qkv_ffn_in8", "icd_outliers_fused",
                             "icd_outliers_fused_fp32_sym_centered")})
"""``<recipe>_gptq``: the recipe with icd's GPTQ rounding of its int8 weights (docs/int8.md, item 7)."""
RECIPES.update({f"{name}_bf16": replace(RECIPES[name], name=f"{name}_bf16", inference_precision="bf16")
                for name in ("nncf_default", "icd_outliers_fused_fp32_sym_centered",
                             "icd_outliers_fused_fp32_sym_centered_gptq")})
"""``<recipe>_bf16``: what the recipe leaves unquantized computed in bf16 — the CPU plugin's own default on CPUs with
bf16 units (AVX512-BF16, AMX), where icd's recipes ask for f32. ``nncf_default_bf16`` is NNCF int8 as OpenVINO runs
it there out of the box (docs/int8.md, "Centred LayerNorm outputs")."""
DEFAULT_RECIPE = "icd_outliers_fused_fp32"
"""Decided by measurement (docs/int8.md, item 8 of "Outliers in fp32 branches"): NNCF's static int8 with its
SmoothQuant (exponent 0.75), each layer's 32 widest FFN neurons in an fp32 branch, attention's activation products
and the Linears icd keeps fp32 left fp32 — ``icd_outliers``'s decisions — on the eager-attention export, which
OpenVINO fuses into one attention kernel where it can (BERT-style attention), Q·Kᵀ in fp32 inside it. Same fidelity
as ``icd_outliers`` on MiniLM and the same graph on MPNet (bench/results/runtimes_fused_fp32.json,
runtimes_mpnet_fused_fp32.json); on MiniLM 1.009x NNCF int8's latency where ``icd_outliers`` took 1.137x. Until
2026-12-01 the default was ``icd_outliers``, chosen for NN >= 0.98 on bench/runtimes.py's two held-out sets;
bench/results/nn_noise.json showed that figure to be a kind draw of texts (over random 256-text sets the two
average 0.966 / 0.965)."""


def recipe_problem(name: str) -> str | None:
    """What is wrong with an int8 recipe name given by a user or a file (None: a recipe of :data:`RECIPES`)."""
    return None if name in RECIPES else f"int8 recipe {name!r} is not one of {sorted(RECIPES)}"


def default_recipe(source: ModelSource, name: str = DEFAULT_RECIPE) -> OpenVinoInt8Recipe:
    """The recipe ``openvino:int8`` exports: :data:`DEFAULT_RECIPE` or the one ``name``s (``icd export-triton
    --int8-recipe``), calibration texts capped by the run's."""
    recipe = RECIPES[name]
    return replace(recipe, calibration_texts=min(recipe.calibration_texts, len(source.calibration_texts)))


def recipe_argument(source: ModelSource, name: str | None) -> dict[str, Any]:
    """``Runtime.export``'s keyword for an OpenVINO int8 recipe named by the user or a profile row: none for None
    (the runtime's default), else ``recipe=`` :func:`default_recipe` of that name."""
    return {} if name is None else {"recipe": default_recipe(source, name)}


def export_encoder(source: ModelSource, recipe: OpenVinoInt8Recipe, output_gather: bool) -> tuple[Any, list[str]]:
    """The Encoder the recipe quantizes (icd-smoothed or plain fp32, with the outlier splits and the FFN output shift
    it asks for) and the fp32 branches the splits add (Linear paths)."""
    from icd.runtimes.base import Precision

    if recipe.icd_smoothing:
        return _attention_for(source.smoothed_encoder(output_gather), recipe), []
    encoder = _attention_for(source.torch_encoder(Precision.FP32, output_gather), recipe)
    batches = _calibration_batches(source, recipe)
    if recipe.centered_layer_norms:  # before the splits: they split the edited Linears
        from icd.runtimes.input_centering import center_layer_norms_

        center_layer_norms_(encoder, batches)
    branches = _split_outliers_(encoder, batches, recipe)
    if recipe.unsigned_ffn_out:  # after the splits: their int8 part is shifted, not their fp32 branch
        from icd.runtimes.unsigned_shift import shift_ffn_out_inputs_

        shift_ffn_out_inputs_(encoder)
    return encoder, branches


def _calibration_batches(source: ModelSource, recipe: OpenVinoInt8Recipe) -> list[dict[str, torch.Tensor]]:
    """The recipe's calibration texts in batches of 16 (torch tensors) where its splits or centring need them."""
    if not (recipe.fp32_ffn_neurons or recipe.fp32_input_channels or recipe.centered_layer_norms):
        return []
    return [{key: torch.from_numpy(value) for key, value in batch.items()}
            for batch in source.calibration_inputs(recipe.calibration_texts, batch_size=16)]


def _split_outliers_(encoder, batches: list[dict[str, torch.Tensor]], recipe: OpenVinoInt8Recipe) -> list[str]:
    """The recipe's outlier splits made in ``encoder`` on the calibration ``batches``; returns the fp32 branches
    they add (Linear paths)."""
    if not (recipe.fp32_ffn_neurons or recipe.fp32_input_channels):
        return []
    from icd.runtimes import outlier_split

    branches = []
    if recipe.fp32_ffn_neurons:
        neurons = outlier_split.widest_ffn_neurons(encoder, batches, recipe.fp32_ffn_neurons)
        branches += outlier_split.split_ffn_outliers_(encoder, neurons)
    if recipe.fp32_input_channels:
        readers = outlier_split.residual_readers(encoder, recipe.fp32_input_roles)
        channels = outlier_split.widest_input_channels(encoder, readers, batches, recipe.fp32_input_channels)
        branches += outlier_split.split_input_channels_(encoder, channels)
    return branches


def _attention_for(encoder, recipe: OpenVinoInt8Recipe):
    """``encoder`` (a copy) switched to transformers' eager attention when the recipe exports fused attention."""
    return with_eager_attention(encoder) if recipe.fused_attention else encoder


def quantize_with_recipe(model, onnx_path: Path, source: ModelSource, recipe: OpenVinoInt8Recipe,
                         split_fp32: list[str] | None = None, threads: int = 1) -> tuple[Any, dict[str, Any]]:
    """``nncf.quantize`` of the converted ``model`` (from ``onnx_path``) as ``recipe`` says; ``split_fp32``: the
    split's fp32 Linears (:func:`export_encoder`), left out too; ``threads``: the CPU plugin's threads for the
    GPTQ Hessian pass. Returns the quantized model and what the weight rounding reports (empty for nearest)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    ignored = recipe.ignored_linears(source) + list(split_fp32 or [])
    names = [node for nodes in matmul_nodes(onnx_path, ignored).values() for node in nodes] if ignored else []
    types = []
    if recipe.fused_attention and fused_attention_ops(model):
        # the kernel's query and key inputs are NNCF's only quantizers on it; its V never is quantized
        types = [FUSED_ATTENTION] if "scores" in recipe.attention_matmuls_fp32 else []
    elif recipe.attention_matmuls_fp32:
        names += activation_matmuls(onnx_path, recipe.attention_matmuls_fp32)
    samples = source.calibration_inputs(recipe.calibration_texts, batch_size=1)
    alphas = AdvancedSmoothQuantParameters(matmul=-1)
    if recipe.nncf_smooth_quant:
        alphas = (AdvancedSmoothQuantParameters() if recipe.smooth_quant_alpha is None
                  else AdvancedSmoothQuantParameters(matmul=recipe.smooth_quant_alpha))
    gptq = recipe.weight_rounding == "gptq"
    advanced = AdvancedQuantizationParameters(smooth_quant_alphas=alphas,
                                              backend_params={"compress_weights": False} if gptq else {})
    with _nncf_warnings_only():
        try:
            quantized = nncf.quantize(
                model, nncf.Dataset(samples), preset=nncf.QuantizationPreset(recipe.preset),
                model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples),
                ignored_scope=nncf.IgnoredScope(names=names, types=types) if names or types else None,
                advanced_parameters=advanced,
            )
        except nncf.ValidationError as exc:  # e.g. a node the recipe leaves fp32 is not in the converted graph
            raise ArtefactError(f"NNCF quantization (recipe {recipe.name}) failed: {_one_line(exc)}") from None
        if gptq:
            return quantized, _round_gptq_(quantized, source, recipe, threads)
        if not (recipe.ignored_weight_only and names):
            return quantized, {}
        others = [op.get_friendly_name() for op in quantized.get_ops()
                  if op.get_type_name() in ("MatMul", "Gather") and op.get_friendly_name() not in names]
        return nncf.compress_weights(quantized, mode=nncf.CompressWeightsMode.INT8_ASYM,
                                     ignored_scope=nncf.IgnoredScope(names=others, validate=False)), {}


def _round_gptq_(quantized, source: ModelSource, recipe: OpenVinoInt8Recipe, threads: int) -> dict[str, Any]:
    """GPTQ rounding of ``quantized``'s int8 weights on the recipe's calibration texts, then weight compression;
    its report (relative output error of each MatMul's weight, nearest vs GPTQ, and their means)."""
    from icd.runtimes.base import Precision
    from icd.runtimes.openvino import compile_properties
    from icd.runtimes.openvino_gptq import compress_weights_, round_weights_gptq_

    properties = {**compile_properties(Precision.INT8, threads, recipe.inference_precision),
                  **recipe.compile_properties()}
    report = round_weights_gptq_(quantized, source.calibration_inputs(recipe.calibration_texts, batch_size=16),
                                 properties)
    compress_weights_(quantized)
    return report


def _one_line(exc: Exception) -> str:
    """NNCF's message on one line, a long list of node names cut to its first name and count."""
    def shorten(match: re.Match) -> str:
        items = match.group(1).split(", ")
        return f"[{items[0]}, ... {len(items)} in all]" if len(items) > 2 else match.group(0)

    return re.sub(r"\[([^\]]*)\]", shorten, " ".join(str(exc).split()))


@contextmanager
def _nncf_warnings_only() -> Iterator[None]:
    """NNCF's logger at WARNING while it quantizes: its INFO lines (one per node it leaves unquantized, dozens per
    model) would otherwise fill the output of ``icd export-triton`` and ``icd profile``; its progress bars stay."""
    from nncf import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        nncf_logger.setLevel(level)
