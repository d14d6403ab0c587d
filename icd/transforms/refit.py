"""Least-squares re-fits of a Linear on calibration statistics — the one implementation behind N:M
sparsity's reconstruction and structured compaction's.

Notation: a Linear ``y = W x + b`` whose inputs in the transformed model are ``x̂`` (``k̂`` features) and, in the
dense model, ``x`` (``k`` features; ``k̂ < k`` after channels were cut). The statistics are a
:class:`~icd.calibrate.replay.LinearStats` (Grams, cross products and sums over calibration tokens).

* :func:`feedback_target` / :func:`augmented_problem` — the unconstrained fit of the dense outputs
  ``XWᵀ + b`` (plus the residual stream's error ``R − R̂`` with residual feedback) from ``X̂`` (and, augmented,
  from ``[X̂, 1]``, so the bias is fitted too);
* :func:`fit_to_dense` — that fit as new weights and bias (what compaction uses: nothing else constrains them);
* :func:`refit_masked` — the same objective with a support per row (what N:M uses, the mask fixed);
* :func:`mean_shift_bias` — the bias moved so mean outputs match (bias correction without a joint fit);
* :func:`column_sweep` — SparseGPT's and GPTQ's column-by-column update (with :func:`inverse_hessian_chol`, the
  upper Cholesky factor of ``(H + λI)⁻¹`` it reads);
* :func:`correct_layernorm` — per-channel scale / shift of the LayerNorm after a residual add, fitted to the dense
  model's outputs.

All solves add damping ``λ = damp · mean diag(H)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from icd.calibrate.replay import LayerCall, LinearStats, linear_input


def prepared_hessian(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``H + λI`` (float64, λ = damp · mean diag) with dead inputs (zero diagonal) given a unit diagonal, and the
    dead-input mask."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    lam = damp * float(h.diagonal().mean().clamp(min=1e-12))
    h.diagonal().add_(lam)
    return h, dead


def support_indices(keep: torch.Tensor) -> torch.Tensor:
    """``rows × k`` column indices of ``keep`` (every row must keep the same number of columns)."""
    counts = keep.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise ValueError("refit: every row must keep the same number of weights")
    return keep.nonzero()[:, 1].reshape(keep.shape[0], int(counts[0]))


def _row_chunks(rows: int, k: int, budget_bytes: int = 1 << 27) -> int:
    return max(1, min(rows, budget_bytes // max(1, 8 * k * k)))


def solve_supports(
    b: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, with_costs: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per row ``r`` with support ``S``: ``w_S = (h_SS)⁻¹ b_S`` (zero elsewhere), and with ``with_costs`` the OBS
    removal cost ``w_i² / [(h_SS)⁻¹]_ii`` of every kept weight (+inf elsewhere). Rows go in chunks (batched
    Cholesky)."""
    idx = support_indices(keep)
    rows, k = idx.shape
    out = torch.zeros_like(b)
    cost = torch.full_like(b, float("inf")) if with_costs else None
    step = _row_chunks(rows, k)
    for r1 in range(0, rows, step):
        sub = idx[r1 : r1 + step]
        chol = torch.linalg.cholesky(h[sub.unsqueeze(2), sub.unsqueeze(1)])
        sol = torch.cholesky_solve(b[r1 : r1 + step].gather(1, sub).unsqueeze(2), chol).squeeze(2)
        out[r1 : r1 + step].scatter_(1, sub, sol)
        if cost is not None:
            eye = torch.eye(k, dtype=chol.dtype).expand_as(chol)
            inv_diag = torch.linalg.solve_triangular(chol, eye, upper=False).pow(2).sum(dim=1)  # diag (LLᵀ)⁻¹
            cost[r1 : r1 + step].scatter_(1, sub, sol**2 / inv_diag)
    return out, cost


def refit_masked(target: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Exact per-row least squares of the kept weights: for each row ``r`` with support ``S``,
    ``ŵ_S = argmin (ŵ − t)ᵀ(H + λI)(ŵ − t) = [(H+λI)_SS]⁻¹ ((H+λI) t)_S``, zero elsewhere.

    SparseGPT's column-by-column OBS updates only compensate each pruned weight on the columns after it, so they
    approximate this optimum for its mask; solving it exactly (a batched Cholesky per chunk of rows) never does
    worse on the calibration objective.

    Args:
        target: ``out × in`` weights to reproduce (the dense or error-feedback target).
        hessian: ``in × in`` mean ``x xᵀ`` of the layer's inputs.
        keep: boolean ``out × in`` support, the same number of kept weights in every row.
        damp: damping as a fraction of the mean diagonal of ``hessian``.

    Returns:
        float64 ``out × in`` weights, zero outside ``keep``.
    """
    h, dead = prepared_hessian(hessian, damp)
    t = target.double().clone()
    t[:, dead] = 0.0
    return solve_supports(t @ h, h, keep)[0]


def row_errors(weight: torch.Tensor, target: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Per-row ``(w − t)ᵀ(H + λI)(w − t)``: the calibration objective SparseGPT and the re-fit minimise."""
    h, _ = prepared_hessian(hessian, damp)
    delta = weight.double() - target.double()
    return ((delta @ h) * delta).sum(dim=1)


def feedback_target(weight: torch.Tensor, stats: LinearStats, damp: float,
                    prior: torch.Tensor | None = None) -> torch.Tensor:
    """Unconstrained least-squares weights for the sparse inputs: ``W (X̂ᵀX)ᵀ (X̂ᵀX̂ + λI)⁻¹``; with a ``prior``
    (``out × k̂``) the damping pulls towards it instead of towards zero: ``(W (X̂ᵀX)ᵀ + λ P)(X̂ᵀX̂ + λI)⁻¹``."""
    if stats.cross is None:
        return weight
    h = stats.gram.gram
    lam = damp * h.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    rhs = stats.cross @ weight.double().T  # X̂ᵀ X Wᵀ
    if stats.cross_resid is not None:
        rhs = rhs + stats.cross_resid  # + X̂ᵀ (R − R̂): also undo the residual stream's error
    if prior is not None:
        rhs = rhs + lam * prior.double().T
    return torch.linalg.solve(h + lam * eye, rhs).T


def augmented_problem(
    weight: torch.Tensor, bias: torch.Tensor, stats: LinearStats, damp: float,
    prior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares problem with the bias as one more, never-pruned input column of constant 1.

    Returns ``(Ĥₐ, tₐ)``: the mean Gram of ``[x̂, 1]`` and the target ``[W*, b*]`` (``[W, b]`` without error feedback;
    with it, the unconstrained fit of the dense outputs ``XWᵀ + b`` from ``[X̂, 1]``). With a ``prior`` ``(P, p)``
    the damping pulls ``[W*, b*]`` towards ``[P, p]`` instead of towards zero (where the data say little, the
    weights stay the prior's).
    """
    if stats.sum_hat is None:
        raise ValueError("augmented_problem: the statistics have no input sums (sum_hat)")
    count = float(max(stats.gram.count, 1))
    s_hat = stats.sum_hat.unsqueeze(1)
    h_aug = torch.cat([torch.cat([stats.gram.gram, s_hat], 1), torch.cat([s_hat.T, s_hat.new_full((1, 1), count)], 1)])
    w_aug = torch.cat([weight.double(), bias.double().unsqueeze(1)], 1)
    if stats.cross is None or stats.sum_dense is None:
        return h_aug / count, w_aug
    s_dense = stats.sum_dense.unsqueeze(1)
    cross_aug = torch.cat([torch.cat([stats.cross, s_hat], 1), torch.cat([s_dense.T, s_hat.new_full((1, 1), count)], 1)])
    lam = damp * h_aug.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(h_aug.shape[0], dtype=h_aug.dtype)
    rhs = cross_aug @ w_aug.T
    if stats.cross_resid is not None and stats.sum_resid is not None:
        rhs = rhs + torch.cat([stats.cross_resid, stats.sum_resid.unsqueeze(0)])
    if prior is not None:
        rhs = rhs + lam * torch.cat([prior[0].double(), prior[1].double().unsqueeze(1)], 1).T
    target = torch.linalg.solve(h_aug + lam * eye, rhs).T
    return h_aug / count, target


def mean_shift_bias(
    weight: torch.Tensor, bias: torch.Tensor, new: torch.Tensor, stats: LinearStats
) -> torch.Tensor:
    """Bias moved by the mean output change, so mean outputs over the calibration tokens match the target's."""
    if stats.sum_hat is None:
        raise ValueError("mean_shift_bias: the statistics have no input sums (sum_hat)")
    s_target = stats.sum_dense if stats.sum_dense is not None else stats.sum_hat
    shift = weight.double() @ s_target - new.double() @ stats.sum_hat
    if stats.sum_resid is not None:
        shift = shift + stats.sum_resid
    shift = shift / max(stats.gram.count, 1)
    return (bias.double() + shift).to(bias.dtype)


def normalized(norm: nn.LayerNorm, u: torch.Tensor) -> torch.Tensor:
    """``(u − mean) / sqrt(var + eps)`` over the last dimension, as ``norm`` computes before its affine map."""
    mean = u.mean(dim=-1, keepdim=True)
    var = u.var(dim=-1, unbiased=False, keepdim=True)
    return (u - mean) / torch.sqrt(var + norm.eps)


def correct_layernorm(
    layer: nn.Module, dense_layer: nn.Module, norm_name: str, calls: Sequence[LayerCall],
    hidden: Sequence[torch.Tensor], dense_hidden: Sequence[torch.Tensor],
) -> None:
    """Re-fit ``norm_name``'s per-channel scale and shift so its outputs on the sparse model's tokens match the
    dense model's by least squares (two parameters per channel, closed form)."""
    norm = layer.get_submodule(norm_name)
    dense_norm = dense_layer.get_submodule(norm_name)
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None:
        return
    width = norm.weight.shape[0]
    s_nn, s_n, s_ny, s_y = (torch.zeros(width, dtype=torch.float64) for _ in range(4))
    count = 0
    for k, call in enumerate(calls):
        n_hat = normalized(norm, linear_input(layer, norm_name, call, hidden[k]))
        with torch.inference_mode():
            target = dense_norm(linear_input(dense_layer, norm_name, call, dense_hidden[k]).to(dense_norm.weight.dtype))
        target = target.double()
        s_nn += (n_hat * n_hat).sum(0)
        s_n += n_hat.sum(0)
        s_ny += (n_hat * target).sum(0)
        s_y += target.sum(0)
        count += n_hat.shape[0]
    det = s_nn * count - s_n * s_n
    ok = det > 1e-9 * (s_nn * count).clamp(min=1e-30)
    scale = torch.where(ok, (s_ny * count - s_n * s_y) / det.where(ok, torch.ones_like(det)), norm.weight.double())
    shift = torch.where(ok, (s_nn * s_y - s_n * s_ny) / det.where(ok, torch.ones_like(det)), norm.bias.double())
    with torch.no_grad():
        norm.weight.copy_(scale.to(norm.weight.dtype))
        norm.bias.copy_(shift.to(norm.bias.dtype))


def output_error_vs_dense(
    weight: torch.Tensor, new_weight: torch.Tensor, stats: LinearStats, bias_shift: torch.Tensor | None = None
) -> float:
    """``‖(XWᵀ + b) − (X̂Ŵᵀ + b̂)‖² / ‖XWᵀ‖²`` over the calibration tokens: the new Linear on the transformed
    model's inputs against the dense one on the dense model's (``bias_shift = b − b̂``, None when the bias is
    unchanged).

    Raises:
        ValueError: ``stats`` has no dense cross products (collected without a dense layer).
    """
    if stats.cross is None or (stats.dense_gram is None and stats.dense_energy is None):
        raise ValueError("output_error_vs_dense: the statistics have no dense inputs (collect them with a dense layer)")
    gram, cross = stats.gram, stats.cross
    w, w_hat = weight.double(), new_weight.double()
    if stats.dense_gram is not None:
        dense = torch.einsum("ij,jk,ik->", w, stats.dense_gram, w).item()
    else:
        dense = float(stats.dense_energy)  # type: ignore[arg-type]  (Σ‖x Wᵀ‖², summed with these weights)
    num = dense - 2 * (w_hat * (w @ cross.T)).sum().item() + torch.einsum("ij,jk,ik->", w_hat, gram.gram, w_hat).item()
    if bias_shift is not None and stats.sum_hat is not None and stats.sum_dense is not None:
        col_sum = w @ stats.sum_dense - w_hat @ stats.sum_hat  # Σ over tokens of the weights' output error
        num += 2 * float(bias_shift @ col_sum) + gram.count * float(bias_shift @ bias_shift)
    return max(num, 0.0) / dense if dense > 0 else 0.0


def fit_to_dense(
    weight: torch.Tensor, bias: torch.Tensor | None, stats: LinearStats, damp: float = 0.01,
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New weights ``k̂`` columns wide (and bias) that reproduce the dense Linear's outputs from the transformed
    model's inputs by least squares: ``min ‖(XWᵀ + b [+ R − R̂]) − (X̂Ŵᵀ + b̂)‖²`` over the calibration tokens.

    Args:
        weight: the dense ``out × k`` weights.
        bias: the dense bias; with it the bias is fitted jointly (a constant-1 input column), else no bias.
        stats: from :func:`icd.calibrate.replay.linear_stats` with a dense layer (error feedback).
        damp: damping as a fraction of the mean diagonal of the (augmented) Gram.
        prior: ``out × k̂`` weights the damping pulls towards (compaction: the kept columns of the dense weights,
            so a Linear whose inputs did not change keeps its weights exactly); None: towards zero.

    Returns:
        float64 ``out × k̂`` weights and ``out`` bias (None when ``bias`` is None).

    Raises:
        ValueError: ``stats`` has no dense cross products (collected without a dense layer).
    """
    if stats.cross is None or stats.sum_dense is None:
        raise ValueError("fit_to_dense: the statistics have no dense inputs (collect them with a dense layer)")
    if bias is None:
        return feedback_target(weight, stats, damp, prior), None
    _, target = augmented_problem(weight, bias, stats, damp, None if prior is None else (prior, bias))
    return target[:, :-1], target[:, -1]


def inverse_hessian_chol(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹`` with λ = damp · mean diag(H), raising λ until it factorises."""
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype)
    scale = hessian.diagonal().mean().clamp(min=1e-12)
    lam = damp * scale
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(hessian + lam * eye)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(inv, upper=True)
        lam = max(float(lam) * 10.0, 1e-8 * float(scale))
    raise ValueError("Hessian is not positive definite even after damping")


ColumnPick = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]
"""``pick(w1, hinv1, i1, i)``: the new values of column ``i1 + i`` (its current values are ``w1[:, i]``)."""


def column_sweep(weight: torch.Tensor, hessian: torch.Tensor, damp: float, block: int,
                 pick: ColumnPick) -> torch.Tensor:
    """The OBS column sweep of SparseGPT and GPTQ (float64): column by column, ``pick`` sets the column's new
    values and the change is moved onto the columns not yet swept through ``(H + λI)⁻¹``'s Cholesky factor.

    An input whose Hessian diagonal is zero (always zero) is not used: its weights are 0 before the sweep.
    """
    cols = weight.shape[1]
    w = weight.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = inverse_hessian_chol(h, damp)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            q = pick(w1, hinv1, i1, i)
            q1[:, i] = q
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w
