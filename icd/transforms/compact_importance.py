"""How much each attention head and FFN channel matters, from calibration text (higher = keep).

Three criteria (``CompactConfig.importance``):

* ``act_weight`` — the energy of the unit's contribution to the Linear that reads it: for FFN channel ``j``
  ``‖W₂[:, j]‖² · E[a_j²]``, for head ``h`` ``E‖W_O[:, h] c_h‖²`` (its block of the attention output's input Gram);
  the squared form of the first probe's ``‖W₂[:, j]‖ · rms(a_j)``.
* ``obs`` — the output error that remains when the unit is removed and the reading Linear (bias included) is
  re-fitted by least squares without it: ``tr(W_S [(H⁻¹)_SS]⁻¹ W_Sᵀ)`` with ``H`` the damped mean Gram of
  ``[x, 1]`` (optimal brain surgeon for a group ``S``: one column, or a head's ``d`` columns). This is what the
  re-fit can and cannot recover, unit by unit.
* ``fisher`` — the diagonal Fisher information of a mask ``m`` on the unit (``m = 1`` keeps it), for the squared
  error of the normalised output against the fp32 model's: ``E‖∂u/∂m‖²``, estimated with random projections
  ``z`` of the output (``E_z[(∂⟨u, z⟩/∂m)²] = ‖∂u/∂m‖²``), as in Kwon et al. 2022 with the fp32 outputs in place of
  labels. It is the only criterion that sees the whole model after the unit.

``act_weight`` and ``obs`` are local to one sub-layer: each is divided by the mean energy of that sub-layer's
LayerNorm input (what the unit is added into before normalisation), so units of different layers compare.
``fisher`` is in units of the one output loss already.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from icd.calibrate.replay import module_inputs, replay_layers
from icd.measure.encode import Batch
from icd.model.layout import bert_of
from icd.transforms.compact_slice import encoder_layers, head_dim, layer_norm_paths, layer_roles, layer_sizes

CRITERIA = ("act_weight", "obs", "fisher")


@dataclass
class UnitScores:
    """Per layer, one score per head and per FFN channel (higher = more important)."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    criterion: str
    seconds: float = 0.0


@dataclass
class _Sums:
    count: int
    gram: torch.Tensor  # Σ x xᵀ
    total: torch.Tensor  # Σ x
    norm_energy: float  # Σ ‖LayerNorm input‖²


def _sums(inputs: Sequence[torch.Tensor], norm_inputs: Sequence[torch.Tensor], full: bool) -> _Sums:
    """Sums over batches; ``full`` = the whole Gram, else only its diagonal (all ``act_weight`` needs of single
    channels) on the diagonal of a zero matrix."""
    width = inputs[0].shape[1]
    gram = torch.zeros(width, width, dtype=torch.float64)
    squares = torch.zeros(width, dtype=torch.float64)
    total = torch.zeros(width, dtype=torch.float64)
    count, energy = 0, 0.0
    for x, u in zip(inputs, norm_inputs):
        if full:
            gram += x.T @ x
        else:
            squares += (x * x).sum(0)
        total += x.sum(0)
        count += x.shape[0]
        energy += float((u * u).sum())
    if not full:
        gram.diagonal().copy_(squares)
    return _Sums(count, gram, total, energy)


def sums_of(gram: torch.Tensor, total: torch.Tensor, count: int) -> _Sums:
    """The sums a criterion needs, from a Gram ``Σ x xᵀ``, ``Σ x`` and the token count."""
    return _Sums(count, gram, total, 0.0)


def _groups(width: int, block: int) -> torch.Tensor:
    return torch.arange(width).reshape(-1, block)


def act_weight_scores(weight: torch.Tensor, sums: _Sums, block: int) -> torch.Tensor:
    """``E‖W_S x_S‖²`` per group of ``block`` columns (``block`` 1: ``‖W[:, j]‖² · E[x_j²]``)."""
    w = weight.detach().double()
    if block == 1:
        return (w * w).sum(0) * sums.gram.diagonal() / max(sums.count, 1)
    out = []
    for cols in _groups(w.shape[1], block):
        sub = w[:, cols]
        out.append(torch.einsum("ij,jk,ik->", sub, sums.gram[cols][:, cols], sub) / max(sums.count, 1))
    return torch.stack(out)


def obs_scores(weight: torch.Tensor, bias: torch.Tensor | None, sums: _Sums, block: int, damp: float) -> torch.Tensor:
    """``tr(W_S [(H⁻¹)_SS]⁻¹ W_Sᵀ)`` per group of ``block`` columns, ``H`` the damped mean Gram of ``[x, 1]``."""
    count = float(max(sums.count, 1))
    s = sums.total.unsqueeze(1)
    gram = torch.cat([torch.cat([sums.gram, s], 1), torch.cat([s.T, s.new_full((1, 1), count)], 1)]) / count
    width = sums.gram.shape[0]
    if bias is None:
        gram = gram[:width, :width]
    lam = damp * float(gram.diagonal().mean().clamp(min=1e-12))
    gram = gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    w = weight.detach().double()
    groups = _groups(width, block)
    if block == 1:
        return (w * w).sum(0) / inverse.diagonal()[:width]
    blocks = inverse[groups.unsqueeze(2), groups.unsqueeze(1)]  # groups × block × block
    w_blocks = w[:, groups].permute(1, 0, 2)  # groups × out × block
    solved = torch.linalg.solve(blocks, w_blocks.transpose(1, 2))  # groups × block × out
    return (w_blocks.transpose(1, 2) * solved).sum(dim=(1, 2))


def local_scores(encoder: nn.Module, batches: Sequence[Batch], criterion: str, damp: float = 0.01) -> UnitScores:
    """``act_weight`` or ``obs`` scores of every layer, replaying the model as it is (one layer at a time)."""
    if criterion not in ("act_weight", "obs"):
        raise ValueError(f"local_scores: criterion must be 'act_weight' or 'obs', got {criterion!r}")
    start = time.perf_counter()
    d = head_dim(encoder)
    norm_attention, norm_ffn = layer_norm_paths(encoder)
    heads: list[torch.Tensor] = []
    ffn: list[torch.Tensor] = []
    for index, layer, _dense, replay in replay_layers(encoder, encoder_layers(encoder), batches, feedback=False):
        roles = layer_roles(encoder, index)
        names = [roles["attn_out"], roles["ffn_out"], norm_attention, norm_ffn]
        captured = [module_inputs(layer, names, call, h) for call, h in zip(replay.calls, replay.hidden)]
        for role, norm, block, out in (("attn_out", norm_attention, d, heads), ("ffn_out", norm_ffn, 1, ffn)):
            sums = _sums([c[roles[role]] for c in captured], [c[norm] for c in captured],
                         full=criterion == "obs" or block > 1)
            linear = layer.get_submodule(roles[role])
            if criterion == "act_weight":
                raw = act_weight_scores(linear.weight, sums, block)
            else:
                raw = obs_scores(linear.weight, linear.bias, sums, block, damp)
            out.append(raw / max(sums.norm_energy / max(sums.count, 1), 1e-30))
    return UnitScores(heads, ffn, criterion, time.perf_counter() - start)


def fisher_scores(encoder: nn.Module, batches: Sequence[Batch], probes: int = 2, seed: int = 0) -> UnitScores:
    """``fisher`` scores: ``E‖∂u/∂m‖²`` per unit mask ``m`` (``u`` the L2-normalised output for an embedding model,
    the logits for a classifier), from ``probes`` random output projections per batch."""
    start = time.perf_counter()
    base = bert_of(encoder)
    d = head_dim(encoder)
    sizes = layer_sizes(encoder)
    head_masks = [torch.ones(s.heads, dtype=torch.float32, requires_grad=True) for s in sizes]
    ffn_masks = [torch.ones(s.intermediate, dtype=torch.float32, requires_grad=True) for s in sizes]
    masks = [*head_masks, *ffn_masks]

    def hook_for(mask: torch.Tensor, block: int):
        def hook(_module: nn.Module, args: tuple) -> tuple:
            scale = mask.repeat_interleave(block) if block > 1 else mask
            return (args[0] * scale, *args[1:])

        return hook

    handles = []
    for index in range(len(sizes)):
        roles = layer_roles(encoder, index)
        layer = encoder_layers(encoder)[index]
        handles.append(layer.get_submodule(roles["attn_out"]).register_forward_pre_hook(hook_for(head_masks[index], d)))
        handles.append(layer.get_submodule(roles["ffn_out"]).register_forward_pre_hook(hook_for(ffn_masks[index], 1)))
    grad_flags = {p: p.requires_grad for p in base.parameters()}
    generator = torch.Generator().manual_seed(seed)
    sums = [torch.zeros_like(m, dtype=torch.float64) for m in masks]
    texts = 0
    try:
        for p in grad_flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            for batch in batches:
                out = encoder(batch.input_ids, batch.attention_mask).float()
                u = nn.functional.normalize(out, dim=-1) if getattr(encoder, "task", "embedding") == "embedding" else out
                for probe in range(probes):
                    z = torch.randn(u.shape, generator=generator)
                    grads = torch.autograd.grad((u * z).sum(), masks, retain_graph=probe < probes - 1)
                    for acc, g in zip(sums, grads):
                        acc += g.double() ** 2
                texts += out.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in grad_flags.items():
            p.requires_grad_(flag)
    scale = 1.0 / max(texts * probes, 1)
    layers = len(sizes)
    return UnitScores([s * scale for s in sums[:layers]], [s * scale for s in sums[layers:]], "fisher",
                      time.perf_counter() - start)


def unit_scores(encoder: nn.Module, batches: Sequence[Batch], criterion: str, damp: float = 0.01, probes: int = 2,
                seed: int = 0) -> UnitScores:
    """Scores by ``criterion`` (one of :data:`CRITERIA`)."""
    if criterion == "fisher":
        return fisher_scores(encoder, batches, probes, seed)
    return local_scores(encoder, batches, criterion, damp)
