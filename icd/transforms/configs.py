"""One config per transform method (pydantic, unknown keys rejected); these are also the ``transforms[]``
entries of a run configuration. Serialised with provenance as ``{"type", "version", "data"}``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class _TransformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    version: int = 1


class NMSparsityConfig(_TransformConfig):
    """N:M structured sparsity along each selected Linear's input dimension (2:4 by default)."""

    type: Literal["nm_sparsity"] = "nm_sparsity"
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
        False, description="sequential data-aware methods: re-fit each Linear's bias so mean outputs match the target"
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


class Int8Config(_TransformConfig):
    """int8 weights, dynamically quantized activations (torch dynamic quantization) on selected Linears."""

    type: Literal["int8"] = "int8"
    scope: str = "all"
    smooth_alpha: float | None = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength; null = off")
    keep_fp32: list[str] = Field(default_factory=list, description="Linear names (regex) kept in fp32")
    auto_keep_fp32: int = Field(0, ge=0, description="keep up to this many most-sensitive Linears in fp32")
    qscheme: Literal["per_channel", "per_tensor"] = Field("per_channel", description="int8 weight scales per output row or per tensor")
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

    @field_validator("alpha_grid")
    @classmethod
    def _alphas_in_range(cls, grid: list[float]) -> list[float]:
        for alpha in grid:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"int8.alpha_grid: {alpha} is outside [0, 1]")
        return grid
