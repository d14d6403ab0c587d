"""Function-preserving per-channel scalings that make a Linear's input easier to quantize (SmoothQuant style).

For ``y = W x + b`` and a positive per-input-channel scale ``s``: ``y = (W diag(s)) (x / s) + b``. Large
activation channels (BERT's outlier dimensions) are divided down, the matching weight columns multiplied up, so
one int8 range per tensor wastes fewer levels on the outliers (Xiao et al., SmoothQuant, 2023).

Where ``x / s`` can be folded into weights, it is:

* **V → O** (:func:`fold_value_output_scale_`): the attention context is a per-head weighted sum of V's outputs,
  so dividing V's output rows by ``s`` and multiplying the attention output projection's input columns by ``s``
  changes no output. Lives in the fp32 weights.

Where it cannot, the division stays a tiny runtime op (:class:`InputScaled`):

* **LayerNorm → Q, K, V, FFN-in**: in post-LN BERT the LayerNorm output is also the residual stream, and the
  next LayerNorm is not per-channel-scale equivariant, so ``1/s`` cannot be folded into LayerNorm's γ/β.
* **GELU → FFN-out**: GELU is not scale-equivariant (``GELU(x/s) != GELU(x)/s``).

Scales are rounded to powers of two (:func:`smoothing_exponents`), so ``x * 2**-k`` and ``W * 2**k`` are exact in
floating point: smoothing alone changes no output beyond the reordering of the matmul's sums.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_EXPONENT = -16
MAX_EXPONENT = 16
_EPS = 1e-5


def smoothing_exponents(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-input-channel log2 scales ``k`` (int8 tensor) so that ``s = 2**k`` migrates ``alpha`` of the range.

    SmoothQuant's ``s_j = max|x_j|**alpha / max_i |W_ij|**(1 - alpha)``, normalised so the median channel keeps
    scale 1, then rounded to the nearest power of two and clamped to ``[MIN_EXPONENT, MAX_EXPONENT]``.

    Args:
        act_absmax: per input channel max |x| seen on calibration text, shape ``in_features``.
        weight: the Linear's weight, shape ``out_features × in_features``.
        alpha: migration strength in [0, 1]; 0 leaves activations as they are.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or shapes that do not match.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    if act_absmax.shape != (weight.shape[1],):
        raise ValueError(f"act_absmax shape {tuple(act_absmax.shape)} does not match weight in_features {weight.shape[1]}")
    a = act_absmax.double().clamp(min=_EPS)
    w = weight.detach().abs().amax(dim=0).double().clamp(min=_EPS)
    log_s = alpha * torch.log2(a) - (1.0 - alpha) * torch.log2(w)
    log_s = log_s - log_s.median()
    return log_s.round().clamp(MIN_EXPONENT, MAX_EXPONENT).to(torch.int8)


def scale_of(exponents: torch.Tensor) -> torch.Tensor:
    """``2**k`` as float32 (exact)."""
    return torch.pow(2.0, exponents.to(torch.float32))


class InputScaled(nn.Module):
    """``inner(x * inv_scale)``: the runtime half of a smoothing that cannot be folded (TorchScript-traceable)."""

    def __init__(self, inner: nn.Module, inv_scale: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("inv_scale", inv_scale.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.inv_scale)


def _parent_and_leaf(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, leaf = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), leaf


def smooth_linear_input_(root: nn.Module, name: str, exponents: torch.Tensor) -> None:
    """Multiply the Linear ``name``'s weight columns by ``2**k`` and divide its input by ``2**k`` (in place).

    The Linear is replaced by ``InputScaled(linear, 2**-k)``; its ``weight`` keeps the scaled values, so a
    quantizer that later replaces ``InputScaled.inner`` quantizes the smoothed weight.

    Raises:
        ValueError: ``name`` is not an ``nn.Linear`` of ``root`` or ``exponents`` has the wrong length.
    """
    module = dict(root.named_modules()).get(name)
    if type(module) is not nn.Linear:
        raise ValueError(f"smoothing: {name!r} is not an nn.Linear")
    if exponents.shape != (module.in_features,):
        raise ValueError(f"smoothing: {name!r} needs {module.in_features} exponents, got {tuple(exponents.shape)}")
    with torch.no_grad():
        module.weight.mul_(scale_of(exponents))
    parent, leaf = _parent_and_leaf(root, name)
    setattr(parent, leaf, InputScaled(module, scale_of(-exponents)))


def fold_value_output_scale_(value: nn.Linear, output: nn.Linear, exponents: torch.Tensor) -> None:
    """Divide V's output channels by ``2**k`` and multiply the attention output Linear's inputs by ``2**k``.

    Exactly function-preserving: the attention context is linear in V per channel.

    Raises:
        ValueError: the sizes of ``value.out_features``, ``output.in_features`` and ``exponents`` differ.
    """
    if not (value.out_features == output.in_features == exponents.shape[0]):
        raise ValueError(
            f"V->O fold: V out {value.out_features}, O in {output.in_features}, scales {exponents.shape[0]} differ"
        )
    scale = scale_of(exponents)
    with torch.no_grad():
        value.weight.div_(scale.unsqueeze(1))
        if value.bias is not None:
            value.bias.div_(scale)
        output.weight.mul_(scale)
