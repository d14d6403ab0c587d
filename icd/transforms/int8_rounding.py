"""How int8 weights are rounded: to the nearest grid point, or GPTQ (Hessian-aware, error-compensating).

Round-to-nearest quantizes each weight alone. GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers") quantizes one input column at a time and moves the rounding
error of that column onto the columns not yet quantized, weighted by the inverse of the layer's input Hessian
``H = mean x xᵀ`` over calibration tokens, so the layer's *output* error ``‖(W − Q) x‖²`` is what it minimises.
It is the same column-by-column update as icd's SparseGPT 2:4 (:mod:`icd.transforms.nm_sparsity`), with
"round to the grid" where SparseGPT has "set to zero".

The grid is icd's own, not torch's observer: per output channel a symmetric scale ``s = max |w| / 127`` and codes
in ``[-127, 127]`` (the absmax element sits exactly on ``±127``). The codes and scales are what gets packed
(:class:`icd.transforms.int8_kernels.DynamicInt8Linear` with ``weight_codes``), so nothing re-rounds them.

Everything here is in the int8 kernel's own units: the weight after icd's smoothing (``W·2**k``, fp32 outlier
columns zero) and the Hessian of the input the kernel sees (``x·2**-k``, the same columns zero).
"""

from __future__ import annotations

from typing import Mapping

import torch

from icd.transforms.refit import column_sweep

CODE_MAX = 127
"""Largest |code|: the grid is symmetric, narrow range ``[-127, 127]``."""

GPTQ_BLOCK = 128
"""Columns per lazy-update block (the result does not depend on it, only the speed)."""

GPTQ_DAMP = 0.01
"""Damping of the Hessian's diagonal, as a fraction of its mean (GPTQ's default)."""


def row_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per output channel ``max |w| / 127`` (float32; 1.0 for an all-zero row, whose codes are all 0)."""
    absmax = weight.detach().abs().amax(dim=1).to(torch.float32)
    return torch.where(absmax > 0, absmax / CODE_MAX, torch.ones_like(absmax))


def round_nearest(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes int8, scales float32)`` of ``weight`` rounded to the nearest grid point."""
    scales = row_scales(weight)
    codes = torch.round(weight.detach().double() / scales.double().unsqueeze(1)).clamp(-CODE_MAX, CODE_MAX)
    return codes.to(torch.int8), scales


def gptq_codes(
    weight: torch.Tensor, hessian: torch.Tensor, block: int = GPTQ_BLOCK, damp: float = GPTQ_DAMP
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes int8 [out, in], scales float32 [out])``: GPTQ of ``weight`` on the grid of :func:`row_scales`.

    A weight that is exactly zero stays zero (its code is 0 whatever the updates moved onto it): N:M sparsity's
    pattern survives, and the error of keeping it zero is moved on like any rounding error (SparseGPT's update).

    Args:
        weight: ``out × in`` weight in the kernel's units.
        hessian: ``in × in`` mean ``x xᵀ`` of the kernel's inputs; a column with a zero diagonal (an input that is
            always zero, e.g. an fp32 outlier channel) is not used and its codes are 0.
        block: columns per lazy-update block.
        damp: Hessian damping as a fraction of its mean diagonal.

    Raises:
        ValueError: shapes disagree, or the Hessian is not positive definite even after damping.
    """
    cols = weight.shape[1]
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"gptq: Hessian {tuple(hessian.shape)} does not match a weight of {cols} input columns")
    scales = row_scales(weight)
    s = scales.double()
    support = weight.detach() != 0
    codes = torch.zeros(weight.shape, dtype=torch.float64)

    def pick(w1: torch.Tensor, hinv1: torch.Tensor, i1: int, i: int) -> torch.Tensor:
        code = torch.round(w1[:, i] / s).clamp(-CODE_MAX, CODE_MAX) * support[:, i1 + i]
        codes[:, i1 + i] = code
        return code * s

    column_sweep(weight, hessian, damp, block, pick)
    return codes.to(torch.int8), scales


def output_errors(weight: torch.Tensor, hessian: torch.Tensor,
                  roundings: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Relative output error ``tr(D H Dᵀ) / tr(W H Wᵀ)`` of each rounding ``(codes, scales)`` (``D = W − codes·s``)."""
    w = weight.detach().double()
    h = hessian.double()
    total = max(float(torch.einsum("oi,ij,oj->", w, h, w)), 1e-300)
    errors = []
    for codes, scales in roundings:
        delta = w - codes.double() * scales.double().unsqueeze(1)
        errors.append(float(torch.einsum("oi,ij,oj->", delta, h, delta)) / total)
    return errors


def kernel_weight(weight: torch.Tensor, exponents: torch.Tensor | None, fp32_channels: torch.Tensor | None) -> torch.Tensor:
    """The weight the int8 kernel packs: ``W·2**k`` per input column (icd's runtime smoothing), fp32 columns zero."""
    from icd.transforms.smoothing import scale_of

    w = weight.detach().to(torch.float32).clone()
    if exponents is not None:
        w.mul_(scale_of(exponents))
    if fp32_channels is not None and fp32_channels.numel():
        w[:, fp32_channels] = 0.0
    return w


def kernel_hessian(hessian: torch.Tensor, exponents: torch.Tensor | None,
                   fp32_channels: torch.Tensor | None) -> torch.Tensor:
    """The Hessian of the kernel's input ``x·2**-k`` (fp32 channels zero) from that of the Linear's input ``x``."""
    from icd.transforms.smoothing import scale_of

    h = hessian.detach().double()
    multiplier = torch.ones(h.shape[0], dtype=torch.float64)
    if exponents is not None:
        multiplier = scale_of(-exponents).double()
    if fp32_channels is not None and fp32_channels.numel():
        multiplier = multiplier.clone()
        multiplier[fp32_channels] = 0.0
    return h * multiplier.unsqueeze(0) * multiplier.unsqueeze(1)


def check_codes(codes: Mapping[str, tuple[torch.Tensor, torch.Tensor]], name: str, out_features: int,
                in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes[name]`` after checking dtype, shape and range; ValueError naming the Linear otherwise."""
    if name not in codes:
        raise ValueError(f"int8 weight codes: none for Linear {name!r}")
    q, s = codes[name]
    if q.dtype != torch.int8 or tuple(q.shape) != (out_features, in_features):
        raise ValueError(f"int8 weight codes of {name!r}: need int8 [{out_features}, {in_features}], "
                         f"got {q.dtype} {list(q.shape)}")
    if tuple(s.shape) != (out_features,) or not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"int8 weight scales of {name!r}: need {out_features} finite positive values")
    if int(q.min()) < -CODE_MAX:
        raise ValueError(f"int8 weight codes of {name!r}: {int(q.min())} is below -{CODE_MAX}")
    return q, s.to(torch.float32)
