"""One config per transform method (pydantic, unknown keys rejected); these are also the ``transforms[]``
entries of a run configuration. Serialised with provenance as ``{"type", "version", "data"}``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class _TransformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    version: int = 1


_NM_VERSION_1_DEFAULTS: dict[str, Any] = {
    "refit": False, "mask_rounds": 0, "bias_correction": False, "residual_feedback": False,
    "layernorm_correction": False,
}
"""What version 1 of :class:`NMSparsityConfig` did for the options it did not have yet."""


class NMSparsityConfig(_TransformConfig):
    """N:M structured sparsity along each selected Linear's input dimension (2:4 by default)."""

    type: Literal["nm_sparsity"] = "nm_sparsity"
    version: int = 2
    n: int = Field(2, gt=0, description="weights kept per group")
    m: int = Field(4, gt=1, description="group size along the input dimension")
    scope: str = Field("ffn", description="'ffn', 'attention', 'all' or a regex over Linear names")
    method: Literal["magnitude", "wanda", "sparsegpt"] = Field(
        "sparsegpt", description="mask selection (and, for sparsegpt, weight reconstruction)"
    )
    blocksize: int = Field(128, gt=0, description="sparsegpt: columns reconstructed per block (rounded down to a multiple of m)")
    damp: float = Field(0.01, ge=0.0, description="sparsegpt: Hessian damping, fraction of its mean diagonal")
    sequential: bool = Field(
        True, description="data-aware methods: calibrate each Linear on the already-sparsified model's activations"
    )
    error_feedback: bool = Field(
        True,
        description="sequential sparsegpt: reconstruct towards the dense model's outputs (min ‖XWᵀ − X̂Ŵᵀ‖), "
        "so each Linear also corrects the error of the Linears before it",
    )
    refit: bool = Field(
        True, description="sparsegpt: exact per-row least-squares re-fit of the kept weights on SparseGPT's mask"
    )
    mask_rounds: int = Field(
        0, ge=0, description="sparsegpt: rounds of in-group mask swaps + exact re-fit (a row keeps a swap only if its error drops)"
    )
    bias_correction: bool = Field(
        True, description="sequential data-aware methods: re-fit each Linear's bias so mean outputs match the target"
    )
    residual_feedback: bool = Field(
        True, description="sequential sparsegpt with error feedback: the Linear before each residual add + LayerNorm "
        "also targets the residual stream's error (R − R̂)",
    )
    layernorm_correction: bool = Field(
        True, description="sequential sparsegpt with error feedback: re-fit the scale / shift of the LayerNorm after "
        "each pruned output projection so its outputs match the dense model's (per channel, least squares)",
    )

    @field_validator("m")
    @classmethod
    def _n_below_m(cls, m: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and n >= m:
            raise ValueError(f"nm_sparsity.n={n} must be less than nm_sparsity.m={m}")
        return m

    @field_validator("scope")
    @classmethod
    def _scope_compiles(cls, scope: str) -> str:
        if scope not in ("ffn", "attention", "all"):
            try:
                re.compile(scope)
            except re.error as exc:
                raise ValueError(f"nm_sparsity.scope={scope!r} is not 'ffn'/'attention'/'all' nor a regex: {exc}") from None
        return scope

    @model_validator(mode="before")
    @classmethod
    def _version_1_defaults(cls, data: Any) -> Any:
        """A version-1 record (written before the exact re-fit and the corrections existed) rebuilds as it ran."""
        if isinstance(data, dict) and data.get("version") == 1:
            return {**_NM_VERSION_1_DEFAULTS, **data}
        return data


class Int8Config(_TransformConfig):
    """int8 weights, activations quantized on every call, on selected Linears (docs/int8.md).

    ``qscheme``: ``per_token`` (one activation scale per token on the ``per_token_scope`` Linears, one per call on
    the others; per-output-channel weight scales), ``per_channel`` / ``per_tensor`` (one activation scale per call;
    weight scales per output channel / per tensor).
    """

    type: Literal["int8"] = "int8"
    scope: str = "all"
    smooth_alpha: float | None = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength; null = off")
    keep_fp32: list[str] = Field(default_factory=list, description="Linear names (regex) kept in fp32")
    auto_keep_fp32: int = Field(0, ge=0, description="keep up to this many most-sensitive Linears in fp32")
    qscheme: Literal["per_token", "per_channel", "per_tensor"] = Field(
        "per_token",
        description="activation scales per token (per_token) or per call (per_channel / per_tensor: weight scales per "
                    "output channel / per tensor); per_token uses per-channel weight scales",
    )
    per_token_scope: str = Field(
        "ffn_out", description="qscheme per_token: the Linears quantized per token ('all', 'ffn', 'attention', 'ffn_in', "
                           "'ffn_out' or a regex); the other quantized Linears get one activation scale per call",
    )
    per_token_max: int | None = Field(
        None, ge=0, description="qscheme per_token: at most this many of the per_token_scope Linears get per-token scales, "
                             "those whose measured int8 output error on calibration text drops most with them (each "
                             "costs extra passes over its input); null = every Linear in per_token_scope",
    )
    outlier_channels: int = Field(
        0, ge=0, description="per quantized Linear, this many input channels (the widest calibration ranges after "
                             "smoothing: LLM.int8()'s outliers) are multiplied in fp32 outside the int8 product; "
                             "0 = none",
    )
    weight_rounding: Literal["nearest", "gptq"] = Field(
        "nearest", description="how int8 weights are rounded: 'nearest' grid point (each weight alone), or 'gptq' "
                               "(column by column, each rounding error moved onto the columns not yet rounded by the "
                               "inverse input Hessian of the calibration texts: minimises the layer's output error; "
                               "needs per-channel weight scales, i.e. qscheme per_token or per_channel)",
    )
    reduce_range: bool | None = Field(
        None, description="7-bit activations (needed on CPUs without VNNI, where u8*s8 products can saturate); "
                          "null = decided at quantization: 8-bit where this CPU has VNNI (recorded in the run)",
    )
    alpha_grid: list[float] = Field(
        default_factory=lambda: [0.5, 0.65, 0.75, 0.85, 0.95],
        description="migration strengths tried per Linear (with smooth_alpha); the lowest measured int8 output error wins",
    )
    cos_target: float = Field(0.995, gt=0.0, le=1.0, description="auto_keep_fp32 stops once calibration cos_mean reaches this")
    search_texts: int = Field(64, gt=0, description="calibration texts used by the smoothing / sensitivity search")
    smooth_min_error: float = Field(
        0.0, ge=0.0,
        description="smooth a Linear whose scale cannot be folded (one multiply at run time) only when its measured "
                    "plain int8 relative output error is at least this; foldable V->O scalings are always considered",
    )
    engine: Literal["onednn", "x86", "fbgemm"] = Field(
        "onednn", description="torch quantized engine whose kernels the int8 Linears are packed for"
    )

    @field_validator("scope", "per_token_scope")
    @classmethod
    def _int8_scope_compiles(cls, scope: str, info: ValidationInfo) -> str:
        if scope not in ("all", "ffn", "attention", "ffn_in", "ffn_out"):
            try:
                re.compile(scope)
            except re.error as exc:
                raise ValueError(f"int8.{info.field_name}={scope!r} is not a named scope nor a regex: {exc}") from None
        return scope

    @model_validator(mode="after")
    def _gptq_needs_channel_scales(self) -> Int8Config:
        if self.weight_rounding == "gptq" and self.qscheme == "per_tensor":
            raise ValueError("int8.weight_rounding='gptq' needs per-channel weight scales: qscheme 'per_token' or "
                             "'per_channel', not 'per_tensor'")
        return self

    @field_validator("alpha_grid")
    @classmethod
    def _alphas_in_range(cls, grid: list[float]) -> list[float]:
        for alpha in grid:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"int8.alpha_grid: {alpha} is outside [0, 1]")
        return grid


class CompactConfig(_TransformConfig):
    """Structured compaction: cut whole attention heads and FFN channels, re-fit what reads them (docs/transforms.md).

    Either keep-ratios (the same fraction of heads / FFN channels in every layer) or a ``budget`` (the fraction of
    the encoder layers' cost to keep, allocated across layers and unit kinds by calibration importance). Ratios
    and budgets are relative to the model the transform is given.
    """

    type: Literal["compact"] = "compact"
    heads_keep: float | None = Field(None, gt=0.0, le=1.0, description="fraction of attention heads kept in every layer")
    ffn_keep: float | None = Field(None, gt=0.0, le=1.0, description="fraction of FFN channels kept in every layer")
    budget: float | None = Field(
        None, gt=0.0, le=1.0, description="fraction of the encoder layers' cost kept (instead of keep-ratios), "
                                          "allocated across layers and unit kinds by importance per unit of cost",
    )
    units: Literal["both", "ffn", "heads"] = Field("both", description="budget: which units may be cut")
    cost: Literal["flops", "latency"] = Field(
        "flops", description="budget: cost model — FLOPs per token at seq_len, or latency per head / FFN channel "
                             "measured on this machine (one layer timed at three sizes)",
    )
    seq_len: int = Field(128, gt=0, description="sequence length the cost model assumes (attention's L² terms)")
    importance: Literal["act_weight", "obs", "fisher"] = Field(
        "act_weight", description="unit importance from calibration: act_weight (energy of the unit's contribution "
                                  "to the Linear that reads it; the default: the most faithful of the three at every "
                                  "budget measured, bench/results/compaction.json), obs (output error left after the "
                                  "least-squares re-fit without it), fisher (diagonal Fisher of a mask on the unit, "
                                  "from the loss against the fp32 outputs)",
    )
    reconstruct: bool = Field(
        True, description="least-squares re-fit of the Linear that reads the cut dim (attention output, FFN output) "
                          "on the compacted model's inputs, towards the dense model's outputs",
    )
    reselect: bool = Field(
        True, description="reconstruct with act_weight / obs: choose each layer's kept units anew in the sequential "
                          "pass, scored on the compacted model's inputs against the dense outputs (the allocation "
                          "fixes only how many)",
    )
    refit_inputs: bool = Field(
        False, description="reconstruct: also re-fit the kept rows of query / key / value and of the FFN input "
                           "towards the dense model's outputs on the compacted model's inputs",
    )
    bias_correction: bool = Field(True, description="reconstruct: fit each re-fitted Linear's bias jointly")
    residual_feedback: bool = Field(
        True, description="reconstruct: the Linear before each residual add also cancels the residual stream's error",
    )
    layernorm_correction: bool = Field(
        False, description="reconstruct: per-channel least-squares re-fit of the LayerNorm after each re-fitted "
                           "output projection to the dense model's outputs",
    )
    damp: float = Field(0.01, ge=0.0, description="least-squares damping, fraction of the Gram's mean diagonal")
    min_heads: int = Field(1, ge=1, description="heads every layer keeps at least")
    min_ffn: int = Field(16, ge=1, description="FFN channels every layer keeps at least")
    ffn_multiple: int = Field(1, ge=1, description="kept FFN channels per layer rounded to a multiple of this")
    fisher_probes: int = Field(2, ge=1, description="fisher: random output projections per calibration batch")
    seed: int = Field(0, description="fisher: seed of the random output projections; distill: of the batch order")
    distill_steps: int = Field(
        0, ge=0, description="after the re-fit, Adam steps of end-to-end distillation towards the model given, on "
                             "the calibration texts (outputs and every layer's hidden states; icd.transforms.distill). "
                             "0: off (the default: it is training, minutes not seconds)",
    )
    distill_lr: float = Field(3e-4, gt=0.0, description="distill: peak learning rate (cosine-annealed to 0)")
    distill_batch_size: int = Field(16, ge=1, description="distill: calibration texts per step")
    distill_hidden_weight: float = Field(
        1.0, ge=0.0, description="distill: weight of the hidden-state error against the output's (1 - cos)",
    )
    distill_token_noise: float = Field(
        0.0, ge=0.0, lt=1.0, description="distill: fraction of each text's tokens replaced at every step by tokens "
                                         "of the calibration texts, the same for teacher and student (0: none)",
    )

    @model_validator(mode="after")
    def _one_target(self) -> CompactConfig:
        ratios = self.heads_keep is not None or self.ffn_keep is not None
        if self.budget is not None and ratios:
            raise ValueError("compact: give either budget or heads_keep / ffn_keep, not both")
        if self.budget is None and not ratios:
            raise ValueError("compact: give heads_keep and/or ffn_keep (fractions in (0, 1]), or a budget")
        return self
