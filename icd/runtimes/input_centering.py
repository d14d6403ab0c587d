"""Centre the LayerNorm outputs that Linears read, per channel, with no operation added: for symmetric int8.

Query, key, value and the FFN input read a residual LayerNorm's output. Its channels are not centred on zero: each
sits around its own offset (the LayerNorm's β, plus what the normalised activation leans to), some far from it. A
symmetric per-tensor int8 quantizer (NNCF's ``performance`` preset, the one the OpenVINO CPU plugin runs fastest on
AMX CPUs, :mod:`icd.runtimes.unsigned_shift`) spends its signed ``[-m, m]`` grid on the widest channel's offset
plus its half-span.

``c``: per channel, the midpoint ``(min + max) / 2`` of the LayerNorm's output over the calibration texts' real
tokens (:func:`icd.calibrate.collector.input_range`). Each centred channel spans ``[-h, h]``, so the per-tensor
range NNCF sets (after its SmoothQuant, which scales channels but does not move them) covers the channels'
half-spans, not their offsets. The grid stays signed: nothing is moved onto its edge, unlike a shift to a
calibration *minimum*, which held-out texts cross and are clipped at (docs/int8.md, "Symmetric quantizers for AMX
CPUs").

The model is post-LayerNorm (BERT, RoBERTa, DistilBERT, MPNet): a LayerNorm's output ``y`` feeds its readers and is
the residual that the next sub-layer adds its output to before its own LayerNorm. Three weight edits, no new
operation, the same function::

    LayerNorm β      → β − c          (the LayerNorm now outputs y − c)
    each reader's b  → b + W c        (W (y − c) + b + W c = W y + b)
    residual writer  → b + c          (the next sub-layer's output Linear, attention-out or FFN-out, whose output
                                       is added to y − c: it adds c back before that sub-layer's LayerNorm)

Centred: the embeddings' LayerNorm and every layer's two LayerNorms but the last layer's output one (the model's
output, read by no Linear). Made at export (:func:`icd.runtimes.openvino_int8.export_encoder`), before the outlier
splits, which then split the edited Linears.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from icd.calibrate.collector import input_range
from icd.model.families import family_of
from icd.model.layout import bert_of, model_shape


@dataclass(frozen=True)
class CenteredNorm:
    """One LayerNorm to centre: its path, the Linears reading its output, the Linear that writes onto its output
    as the next residual (paths relative to the base model)."""

    norm: str
    readers: tuple[str, ...]
    residual_writer: str


def centered_norms(encoder: nn.Module) -> list[CenteredNorm]:
    """The LayerNorms :func:`center_layer_norms_` centres, in forward order: per layer, the one Q, K and V read
    (the embeddings' for layer 0, else the previous layer's output one; its residual writer is attention-out), then
    the one the FFN input reads (after attention; its residual writer is FFN-out)."""
    family = family_of(encoder)
    norms = []
    for layer in range(model_shape(encoder).layers):
        linears = family.linears(layer)
        before = family.embedding_norm if layer == 0 else family.layer_norm_paths(layer - 1)[1]
        norms.append(CenteredNorm(before, (linears["query"], linears["key"], linears["value"]), linears["attn_out"]))
        norms.append(CenteredNorm(family.layer_norm_paths(layer)[0], (linears["ffn_in"],), linears["ffn_out"]))
    return norms


def norm_midpoints(encoder: nn.Module, norms: Iterable[CenteredNorm],
                   batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per LayerNorm path, the midpoint ``(min + max) / 2`` of each channel of its output over the real tokens of
    ``batches`` (``input_ids`` / ``attention_mask`` mappings), seen at its first reader's input.

    Raises:
        ValueError: a LayerNorm's output reached no reader (no batch, or only padding).
    """
    base = bert_of(encoder)
    modules = {norm.norm: base.get_submodule(norm.readers[0]) for norm in norms}
    ranges = input_range(encoder, modules, ((batch["input_ids"], batch["attention_mask"]) for batch in batches))
    missing = [path for path in modules if path not in ranges]
    if missing:
        raise ValueError(f"LayerNorm centring: no calibration token reached {missing[0]} ({len(missing)} in all)")
    return {path: (low + high) / 2 for path, (low, high) in ranges.items()}


def center_layer_norms_(encoder: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Centre the output of every LayerNorm of :func:`centered_norms` on ``batches``' channel midpoints, in place
    (module docstring: three weight edits, the same function); returns the midpoints by LayerNorm path.

    Raises:
        ValueError: a LayerNorm without a bias, or a reader / residual writer that is not a plain Linear (centre
            before any split).
    """
    base = bert_of(encoder)
    norms = centered_norms(encoder)
    for norm in norms:
        if getattr(base.get_submodule(norm.norm), "bias", None) is None:
            raise ValueError(f"LayerNorm centring: {norm.norm} has no bias to centre with")
        for path in (*norm.readers, norm.residual_writer):
            module = base.get_submodule(path)
            if type(module) is not nn.Linear or module.bias is None:
                raise ValueError(f"LayerNorm centring: {path} is a {type(module).__name__}"
                                 f"{'' if type(module) is not nn.Linear else ' without a bias'}, not a Linear with "
                                 f"a bias (centre before splitting)")
    midpoints = norm_midpoints(encoder, norms, batches)
    with torch.no_grad():
        for norm in norms:
            centre = midpoints[norm.norm].double()
            _add_(base.get_submodule(norm.norm).bias, -centre)
            for path in norm.readers:
                reader = base.get_submodule(path)
                _add_(reader.bias, reader.weight.double() @ centre)
            _add_(base.get_submodule(norm.residual_writer).bias, centre)
    return midpoints


def _add_(parameter: torch.Tensor, delta: torch.Tensor) -> None:
    parameter.add_(delta.to(parameter.dtype))
