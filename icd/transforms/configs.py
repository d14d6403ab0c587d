"""One config per transform method (pydantic, unknown keys rejected); these are also the ``transforms[]``
entries of a run configuration. Serialised with provenance as ``{"type", "version", "data"}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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


class Int8Config(_TransformConfig):
    """int8 weights, dynamically quantized activations (torch dynamic quantization) on selected Linears."""

    type: Literal["int8"] = "int8"
    scope: str = "all"
    smooth_alpha: float | None = Field(0.5, ge=0.0, le=1.0, description="SmoothQuant migration strength; null = off")
    keep_fp32: list[str] = Field(default_factory=list, description="Linear names (regex) kept in fp32")
    auto_keep_fp32: int = Field(0, ge=0, description="keep up to this many most-sensitive Linears in fp32")
