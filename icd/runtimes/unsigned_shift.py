"""A non-negative input for the FFN output Linear, so a *symmetric* int8 quantizer of it is unsigned.

The FFN output Linear reads the activation's output (GELU: never below -0.16997, a long positive tail). A static
int8 quantizer of it has one range per tensor. NNCF's ``mixed`` preset makes it asymmetric (``[min, max]`` with a
zero point), its ``performance`` preset symmetric: signed ``[-m, m]`` — half the levels for values that reach only
-0.17 — or unsigned ``[0, m]`` for a tensor that is never negative. The OpenVINO CPU plugin runs a MatMul with an
asymmetric (zero-point) input on a slower kernel on AMX CPUs (bench/results/ov_profile_amx.json). A shift by the
activation's floor gets the unsigned grid with the symmetric kernel, and changes no output::

    ffn_out(h) = W h + b = W (h + s) + (b − s · W 1)

``s`` is minus the activation's lowest value (found on a dense grid of inputs, :func:`activation_floor`) plus a
small margin: ``h + s`` is never negative, on any input, so NNCF's symmetric quantizer makes it unsigned and nothing
is clipped at the bottom. The shift is an explicit Add before the MatMul (the CPU plugin fuses it with the
quantizer); the bias takes ``−s · W 1``. Made at export, after the outlier splits
(:mod:`icd.runtimes.outlier_split`): a split FFN's int8 part (``<ffn_out>.main``) is shifted, its fp32 branch is not.

Per-channel shifts from calibration minima (for every Linear's input, LayerNorm outputs included) were measured
too and lost fidelity: a channel's minimum on the calibration texts is a tight floor that held-out texts cross,
and what crosses it is clipped (docs/int8.md). The LayerNorm outputs are centred on their channels' midpoints instead,
keeping the signed grid (:mod:`icd.runtimes.input_centering`).
"""

from __future__ import annotations

import torch
from torch import nn

from icd.model.families import family_of
from icd.model.layout import bert_of, model_shape
from icd.runtimes.outlier_split import FfnReader, activation_of

SHIFT_MARGIN = 1e-4
"""Added to minus the activation's floor (grid and rounding): the shifted input stays above 0."""


class ShiftedInputLinear(nn.Module):
    """``linear(x + shift)`` with ``linear``'s bias lowered by ``shift · W 1``: the same function as ``linear``."""

    def __init__(self, linear: nn.Linear, shift: float):
        super().__init__()
        self.linear = linear
        self.shift = float(shift)
        with torch.no_grad():
            correction = (linear.weight.double().sum(dim=1) * self.shift).to(linear.weight.dtype)
            if linear.bias is None:
                linear.bias = nn.Parameter(-correction)
            else:
                linear.bias.sub_(correction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x + self.shift)


def activation_floor(activation: nn.Module, low: float = -20.0, high: float = 20.0, points: int = 400_001) -> float:
    """The lowest output of ``activation`` over ``points`` evenly spaced inputs in ``[low, high]`` (float64); 0 for
    an activation that is never negative there."""
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    with torch.no_grad():
        return min(float(activation(grid).min()), 0.0)


def ffn_out_shift(encoder: nn.Module) -> float:
    """The shift that keeps the FFN output Linear's input non-negative: minus the activation's floor plus
    :data:`SHIFT_MARGIN`; 0 for an activation that is never negative (ReLU)."""
    floor = activation_floor(activation_of(encoder))
    return 0.0 if floor >= 0.0 else -floor + SHIFT_MARGIN


def shift_ffn_out_inputs_(encoder: nn.Module) -> float:
    """Shift every layer's FFN output Linear's input (:class:`ShiftedInputLinear`; the int8 part of a split FFN),
    in place; returns the shift (0: nothing done, the activation is never negative).

    Raises:
        ValueError: a layer's FFN output is neither a Linear nor a split one.
    """
    shift = ffn_out_shift(encoder)
    if shift == 0.0:
        return 0.0
    family, base = family_of(encoder), bert_of(encoder)
    for layer in range(model_shape(encoder).layers):
        path = family.linears(layer)["ffn_out"]
        module = base.get_submodule(path)
        if isinstance(module, FfnReader):
            path, module = f"{path}.main", module.main
        if not isinstance(module, nn.Linear):
            raise ValueError(f"layer {layer}: FFN output {path} is a {type(module).__name__}, not a Linear")
        base.set_submodule(path, ShiftedInputLinear(module, shift))
    return shift
