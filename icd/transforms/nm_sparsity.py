"""One-shot N:M sparsity along each selected Linear's input dimension.

In every output row, each group of ``m`` consecutive input columns keeps at most ``n`` weights. Methods:

* ``magnitude`` — keep the ``n`` largest ``|W_ij|`` per group (no data).
* ``wanda`` — keep the ``n`` largest ``|W_ij| · ‖x_j‖`` (Sun et al. 2023); ``‖x_j‖`` from calibration tokens.
* ``sparsegpt`` — OBS-style mask selection and reconstruction of the kept weights from the Hessian
  ``H = XᵀX + λI``, column block by block (Frantar & Alistarh 2023); by default the kept weights are then
  re-fitted exactly (per-row least squares on the mask, ``refit``), optionally after in-group mask swaps
  (``mask_rounds``).

In the sequential pass each Linear's bias can be fitted with its kept weights (``bias_correction``), the
projection before each residual add + LayerNorm can also cancel the residual stream's error
(``residual_feedback``), and that LayerNorm's scale / shift can be re-fitted to the dense outputs
(``layernorm_correction``); all three are on by default.

The shared machinery lives apart: input Grams from the one collector (:mod:`icd.calibrate.gram`), the layer
replay (:mod:`icd.calibrate.replay`), the least-squares re-fits (:mod:`icd.transforms.refit`; structured
compaction uses the same ones).

Data-aware methods run *sequentially* by default: Linears are processed in forward order, and each one's
statistics come from the model whose earlier Linears are already sparse, so later layers compensate the error
of earlier ones. The weights present when the transform runs are used as they are, so N:M applies equally to a
model whose permutations were folded in before.

Example:
    >>> optimize_(encoder, NMSparsityConfig(n=2, m=4, scope="all", method="sparsegpt"),
    ...           TransformContext(tokenizer=tok, calibration_texts=texts))  # doctest: +SKIP
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from icd.calibrate.gram import InputGram, collect_grams, grams_from_stats
from icd.calibrate.replay import LinearStats, replay_layers, residual_parent
from icd.measure.encode import Batch
from icd.model.families import family_of, layer_name_pattern, shared_input_pattern
from icd.transforms.api import TransformContext, TransformRecord, register_transform
from icd.transforms.configs import NMSparsityConfig
from icd.transforms.refit import (
    augmented_problem,
    correct_layernorm,
    column_sweep,
    feedback_target,
    mean_shift_bias,
    output_error_vs_dense,
    prepared_hessian,
    refit_masked,
    solve_supports,
)

SCOPE_NAMES = ("ffn", "attention", "all")
"""Named scopes; which Linear paths each selects is the model family's (``Family.scope_pattern``)."""
_SHARED_INPUT = shared_input_pattern()


# ----------------------------------------------------------------------------------------------------------------
# Masks


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask with the ``n`` highest ``scores`` in each group of ``m`` consecutive columns per row.

    Raises:
        ValueError: ``scores`` is not 2-D, its column count is not a multiple of ``m``, or ``n >= m``.
    """
    if scores.dim() != 2:
        raise ValueError(f"nm_mask: scores must be 2-D, got shape {tuple(scores.shape)}")
    if not 0 < n < m:
        raise ValueError(f"nm_mask: need 0 < n < m, got n={n}, m={m}")
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"nm_mask: {cols} input columns is not a multiple of m={m}")
    groups = scores.reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.reshape(rows, cols)


def is_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive input columns of every row has at most ``n`` non-zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    nonzero = (weight != 0).reshape(rows, cols // m, m).sum(dim=2)
    return bool((nonzero <= n).all())


# ----------------------------------------------------------------------------------------------------------------
# Selection


def encoder_body(encoder: nn.Module) -> nn.Module:
    """The base model whose module names are the Linear names (BERT: ``encoder.layer.0.intermediate.dense``)."""
    return getattr(encoder, "bert", encoder)


def select_linears(encoder: nn.Module, scope: str) -> dict[str, nn.Linear]:
    """Linears of the encoder body matching ``scope`` ('ffn', 'attention', 'all' or a regex), in forward order.

    Raises:
        ValueError: nothing matches.
    """
    pattern = re.compile(family_of(encoder).scope_pattern(scope) if scope in SCOPE_NAMES else scope)
    body = encoder_body(encoder)
    chosen = {name: mod for name, mod in body.named_modules() if isinstance(mod, nn.Linear) and pattern.search(name)}
    if not chosen:
        raise ValueError(f"nm_sparsity.scope={scope!r} selects no Linear of the model")
    return chosen


def input_groups(names: Sequence[str]) -> list[list[str]]:
    """Group Linear names that read the same input (query/key/value of one layer), keeping forward order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_SHARED_INPUT.sub(".qkv", name), []).append(name)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------------------
# Methods


def magnitude_prune(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Weights with the ``n`` largest ``|w|`` kept per group of ``m`` inputs, the rest zero."""
    return weight * nm_mask(weight.abs(), n, m)


def wanda_prune(weight: torch.Tensor, input_norms: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Weights with the ``n`` largest ``|w_ij| · ‖x_j‖`` kept per group of ``m`` inputs."""
    scores = weight.abs().double() * input_norms.double().unsqueeze(0)
    return weight * nm_mask(scores, n, m)


def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, n: int, m: int, blocksize: int = 128, damp: float = 0.01
) -> torch.Tensor:
    """N:M mask selection and weight reconstruction by SparseGPT (Frantar & Alistarh 2023, Alg. 1).

    Args:
        weight: ``out × in`` weights.
        hessian: ``in × in`` mean ``x xᵀ`` of the layer's inputs.
        n, m: keep ``n`` of every ``m`` consecutive inputs per row.
        blocksize: columns per lazy-update block (rounded down to a multiple of ``m``).
        damp: damping as a fraction of the mean diagonal of ``hessian``.

    Returns:
        New weights (same shape and dtype) in the exact N:M pattern.
    """
    return _sparsegpt(weight, hessian, n, m, blocksize, damp)[0].to(weight.dtype)


def _sparsegpt(
    weight: torch.Tensor, hessian: torch.Tensor, n: int, m: int, blocksize: int = 128, damp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT weights (float64) and their keep-mask (exactly ``n`` per group of ``m`` in every row)."""
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"sparsegpt: {cols} input columns is not a multiple of m={m}")
    prune = torch.zeros(rows, cols, dtype=torch.bool)

    def pick(w1: torch.Tensor, hinv1: torch.Tensor, i1: int, i: int) -> torch.Tensor:
        if i % m == 0:  # the group's mask, from its current weights (a block holds whole groups)
            scores = w1[:, i : i + m] ** 2 / hinv1.diagonal()[i : i + m].unsqueeze(0) ** 2
            drop = scores.topk(m - n, dim=1, largest=False).indices
            prune[:, i1 + i : i1 + i + m].scatter_(1, drop, True)
        return w1[:, i].masked_fill(prune[:, i1 + i], 0.0)

    w = column_sweep(weight, hessian, damp, max(m, blocksize - blocksize % m), pick)
    return w, ~prune


def improve_mask(
    target: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, n: int, m: int, rounds: int = 3,
    damp: float = 0.01, fixed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternate N:M mask swaps and exact re-fits; a row takes its swapped mask only if its objective drops.

    Each round, from the re-fitted weights ``ŵ`` and the gradient ``g = (H+λI)(ŵ − t)``, every group of ``m``
    proposes its best single swap — drop kept ``i``, add pruned ``j`` — when the predicted change
    ``ŵ_i²/[(H_SS)⁻¹]_ii − g_j²/H_jj`` is negative; each row is re-fitted on its swapped mask and keeps it only if
    its ``row_errors`` fell, so the objective never rises.

    Args:
        target, hessian, keep, damp: as for :func:`refit_masked`; ``keep`` must be N:M on the grouped columns.
        n, m: the pattern (swaps stay inside a group, so it is kept exactly).
        rounds: swap / re-fit rounds (stops early when no row improves).
        fixed: the last ``fixed`` columns are outside the N:M groups and always kept (e.g. a bias column).

    Returns:
        (float64 weights, keep mask): the exact re-fit on the returned mask.
    """
    h, dead = prepared_hessian(hessian, damp)
    t = target.double().clone()
    t[:, dead] = 0.0
    b = t @ h
    rows, cols = t.shape
    grouped = cols - fixed
    if grouped % m:
        raise ValueError(f"improve_mask: {grouped} grouped columns is not a multiple of m={m}")
    w, cost = solve_supports(b, h, keep, with_costs=True)
    err = (((w - t) @ h) * (w - t)).sum(dim=1)
    diag = h.diagonal()[:grouped].unsqueeze(0)
    for _ in range(rounds):
        grad = (w @ h - b)[:, :grouped]
        gain = (grad**2 / diag).masked_fill(keep[:, :grouped], float("-inf")).reshape(rows, -1, m)
        drop_cost, drop_at = cost[:, :grouped].reshape(rows, -1, m).min(dim=2)
        add_gain, add_at = gain.max(dim=2)
        swap = drop_cost - add_gain < 0
        if not bool(swap.any()):
            break
        new_keep = keep.clone()
        grouped_keep = new_keep[:, :grouped].reshape(rows, -1, m)  # a view
        g_rows, g_cols = swap.nonzero(as_tuple=True)
        grouped_keep[g_rows, g_cols, drop_at[g_rows, g_cols]] = False
        grouped_keep[g_rows, g_cols, add_at[g_rows, g_cols]] = True
        w_new, cost_new = solve_supports(b, h, new_keep, with_costs=True)
        err_new = (((w_new - t) @ h) * (w_new - t)).sum(dim=1)
        better = err_new < err
        if not bool(better.any()):
            break
        pick = better.unsqueeze(1)
        keep, w, err = torch.where(pick, new_keep, keep), torch.where(pick, w_new, w), torch.where(better, err_new, err)
        cost = torch.where(pick, cost_new, cost)  # type: ignore[arg-type]
    return w, keep


# ----------------------------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class LayerSparsity:
    """What N:M did to one Linear.

    ``rel_error`` is ``‖(W − Ŵ) X‖² / ‖W X‖²`` over the calibration inputs the Linear saw (``error_kind``
    "output"), or ``‖W − Ŵ‖² / ‖W‖²`` when no data was used (``error_kind`` "weight").
    """

    name: str
    out_features: int
    in_features: int
    kept_fraction: float
    rel_error: float
    error_kind: str
    calibration_tokens: int


@dataclass
class NMSparsityReport:
    """Per-layer results of one N:M transform and its provenance."""

    record: TransformRecord
    layers: list[LayerSparsity] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"record": self.record.to_dict(), "seconds": self.seconds, "layers": [asdict(x) for x in self.layers]}


def _layer_report(name: str, old: torch.Tensor, new: torch.Tensor, gram: InputGram | None) -> LayerSparsity:
    delta = (old - new).double()
    if gram is not None and gram.count > 0:
        h = gram.hessian
        num = torch.einsum("ij,jk,ik->", delta, h, delta).item()
        den = torch.einsum("ij,jk,ik->", old.double(), h, old.double()).item()
        kind = "output"
    else:
        num, den, kind = delta.pow(2).sum().item(), old.double().pow(2).sum().item(), "weight"
    return LayerSparsity(
        name=name,
        out_features=old.shape[0],
        in_features=old.shape[1],
        kept_fraction=float((new != 0).double().mean()),
        rel_error=num / den if den > 0 else 0.0,
        error_kind=kind,
        calibration_tokens=gram.count if gram is not None else 0,
    )


def _encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    return list(encoder_body(encoder).get_submodule(family_of(encoder).layers))


_LAYER_NAME = layer_name_pattern()


def _sequential_layerwise(
    encoder: nn.Module, linears: dict[str, nn.Linear], config: NMSparsityConfig, batches: Sequence[Batch]
) -> list[LayerSparsity]:
    """Sparsify encoder-layer Linears layer by layer on cached layer inputs (each layer runs a few times)."""
    layers = _encoder_layers(encoder)
    by_layer: dict[int, list[str]] = {}
    for name in linears:
        match = _LAYER_NAME.match(name)
        if match:
            by_layer.setdefault(int(match.group(1)), []).append(name)
    if not by_layer:
        return []
    feedback = config.method == "sparsegpt" and config.error_feedback
    results = []
    for index, layer, dense_layer, replay in replay_layers(encoder, layers, batches, feedback, max(by_layer)):
        for group in input_groups(by_layer.get(index, [])):
            rel = _LAYER_NAME.match(group[0]).group(2)  # type: ignore[union-attr]
            stats = replay.stats(layer, dense_layer, rel, residual=config.residual_feedback and len(group) == 1)
            for name in group:
                results.append(_apply_one(name, linears[name], config, stats))
            parent = residual_parent(layer, rel) if len(group) == 1 else None
            if (config.layernorm_correction and parent is not None and dense_layer is not None
                    and replay.dense_hidden):
                correct_layernorm(layer, dense_layer, rel.rpartition(".")[0] + ".LayerNorm", replay.calls,
                                  replay.hidden, replay.dense_hidden)
    return results


def _layer_report_vs_dense(
    name: str, old: torch.Tensor, new: torch.Tensor, stats: LinearStats, bias_shift: torch.Tensor | None = None
) -> LayerSparsity:
    """``rel_error = ‖(XWᵀ + b) − (X̂Ŵᵀ + b̂)‖² / ‖XWᵀ‖²``: the sparse Linear on sparse-model inputs vs the dense one
    (``bias_shift = b − b̂``, None when the bias is unchanged)."""
    rel_error = output_error_vs_dense(old, new, stats, bias_shift)
    return LayerSparsity(
        name=name, out_features=old.shape[0], in_features=old.shape[1],
        kept_fraction=float((new != 0).double().mean()),
        rel_error=rel_error, error_kind="output_vs_dense", calibration_tokens=stats.gram.count,
    )


# ----------------------------------------------------------------------------------------------------------------
# Driver


def _sparsify(
    weight: torch.Tensor, bias: torch.Tensor | None, config: NMSparsityConfig, stats: LinearStats | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New N:M weights, and a new bias when ``config.bias_correction`` applies (else None)."""
    n, m, damp = config.n, config.m, config.damp
    if config.method == "magnitude":
        return magnitude_prune(weight, n, m), None
    if stats is None:
        raise ValueError(f"nm_sparsity.method={config.method!r} needs calibration data (TransformContext)")
    fit_bias = config.bias_correction and bias is not None and stats.sum_hat is not None
    if config.method == "wanda":
        new = wanda_prune(weight, stats.gram.input_norms, n, m)
        return new, mean_shift_bias(weight, bias, new, stats) if fit_bias else None  # type: ignore[arg-type]
    target = feedback_target(weight, stats, damp)
    new, keep = _sparsegpt(target, stats.gram.hessian, n, m, config.blocksize, damp)
    if not (config.refit or config.mask_rounds):
        new = new.to(weight.dtype)
        return new, mean_shift_bias(weight, bias, new, stats) if fit_bias else None  # type: ignore[arg-type]
    hessian, fixed = stats.gram.hessian, 0
    if fit_bias:
        hessian, target = augmented_problem(weight, bias, stats, damp)  # type: ignore[arg-type]
        keep, fixed = torch.cat([keep, keep.new_ones(keep.shape[0], 1)], 1), 1
    if config.mask_rounds:
        new, _ = improve_mask(target, hessian, keep, n, m, config.mask_rounds, damp, fixed)
    else:
        new = refit_masked(target, hessian, keep, damp)
    if fit_bias:
        return new[:, :-1].to(weight.dtype), new[:, -1].to(bias.dtype)  # type: ignore[union-attr]
    return new.to(weight.dtype), None


def _check_shapes(linears: dict[str, nn.Linear], m: int) -> None:
    for name, linear in linears.items():
        if linear.in_features % m:
            raise ValueError(f"nm_sparsity.m={m}: Linear {name} has {linear.in_features} inputs, not a multiple of m")


def _one_pass_grams(
    encoder: nn.Module, config: NMSparsityConfig, context: TransformContext | None, names: Sequence[str]
) -> dict[str, InputGram] | None:
    """Grams of ``names`` from the model as it is now, or from ``context.stats`` (None for magnitude)."""
    if config.method == "magnitude" or not names:
        return None
    if context is not None and context.stats is not None and not config.sequential:
        grams = grams_from_stats(context.stats, names)
        if grams is not None:
            return grams
    if context is None or not context.has_calibration_data:
        raise ValueError(f"nm_sparsity.method={config.method!r} needs calibration data (TransformContext)")
    return collect_grams(encoder, names, context.calibration_batches())


def apply_nm_sparsity(
    encoder: nn.Module, config: NMSparsityConfig, context: TransformContext | None = None
) -> NMSparsityReport:
    """Make every Linear in ``config.scope`` N:M sparse, in place; return per-layer information.

    Raises:
        ValueError: the scope selects nothing, a Linear's input size is not a multiple of ``m``, or a data-aware
            method has no calibration data.
    """
    start = time.perf_counter()
    linears = select_linears(encoder, config.scope)
    _check_shapes(linears, config.m)
    report = NMSparsityReport(record=TransformRecord.from_config(config))
    remaining = list(linears)
    data_aware = config.method != "magnitude"
    if data_aware and config.sequential and context is not None and context.has_calibration_data:
        report.layers.extend(_sequential_layerwise(encoder, linears, config, context.calibration_batches()))
        done = {layer.name for layer in report.layers}
        remaining = [name for name in remaining if name not in done]
    if config.sequential and data_aware:
        for group in input_groups(remaining):  # Linears outside the encoder layers (pooler, head), in order
            grams = _one_pass_grams(encoder, config, context, group)
            for name in group:
                report.layers.append(_apply_one(name, linears[name], config, _stats_of(grams, name)))
    else:
        grams = _one_pass_grams(encoder, config, context, remaining)
        for name in remaining:
            report.layers.append(_apply_one(name, linears[name], config, _stats_of(grams, name)))
    report.seconds = time.perf_counter() - start
    return report


def _stats_of(grams: dict[str, InputGram] | None, name: str) -> LinearStats | None:
    return None if grams is None else LinearStats(grams[name], None)


def _apply_one(name: str, linear: nn.Linear, config: NMSparsityConfig, stats: LinearStats | None) -> LayerSparsity:
    old = linear.weight.data.clone()
    old_bias = None if linear.bias is None else linear.bias.data.clone()
    new, new_bias = _sparsify(old, old_bias, config, stats)
    with torch.no_grad():
        linear.weight.copy_(new)
        if new_bias is not None and linear.bias is not None:
            linear.bias.copy_(new_bias)
    bias_shift = None
    if new_bias is not None and old_bias is not None and linear.bias is not None:
        bias_shift = (old_bias - linear.bias.data).double()
    if stats is not None and stats.cross is not None and stats.dense_gram is not None:
        return _layer_report_vs_dense(name, old, linear.weight.data, stats, bias_shift)
    return _layer_report(name, old, linear.weight.data, None if stats is None else stats.gram)


@register_transform(NMSparsityConfig)
def _nm_sparsity_handler(encoder: nn.Module, config: NMSparsityConfig, context: TransformContext | None) -> NMSparsityReport:
    return apply_nm_sparsity(encoder, config, context)
