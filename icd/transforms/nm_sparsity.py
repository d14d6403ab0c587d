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

Data-aware methods run *sequentially* by default: Linears are processed in forward order, and each one's
statistics come from the model whose earlier Linears are already sparse, so later layers compensate the error
of earlier ones. The weights present when the transform runs are used as they are, so N:M applies equally to a
model whose permutations were folded in before.

Example:
    >>> optimize_(encoder, NMSparsityConfig(n=2, m=4, scope="all", method="sparsegpt"),
    ...           TransformContext(tokenizer=tok, calibration_texts=texts))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from icd.measure.encode import Batch
from icd.model.families import family_of, layer_name_pattern, shared_input_pattern
from icd.transforms.api import TransformContext, TransformRecord, register_transform
from icd.transforms.configs import NMSparsityConfig

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
# Calibration statistics


@dataclass
class InputGram:
    """Σ x xᵀ over the non-padding tokens a Linear has seen (float64) and the token count."""

    gram: torch.Tensor
    count: int = 0

    @property
    def hessian(self) -> torch.Tensor:
        """Mean ``x xᵀ`` (the layer-wise Hessian up to a factor 2)."""
        return self.gram / max(self.count, 1)

    @property
    def input_norms(self) -> torch.Tensor:
        """‖x_j‖ per input channel over all tokens (what Wanda multiplies ``|W|`` by)."""
        return self.gram.diagonal().clamp(min=0).sqrt()


class _StopForward(Exception):
    """Raised by a hook once every Linear of interest has seen its input for the batch."""


@contextmanager
def _gram_hooks(body: nn.Module, names: Sequence[str], stop_after: str | None) -> Iterator[tuple[dict[str, InputGram], list]]:
    modules = dict(body.named_modules())
    grams = {name: InputGram(torch.zeros(modules[name].in_features, modules[name].in_features, dtype=torch.float64))
             for name in names}
    mask_holder: list[torch.Tensor] = []

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            tokens = x[mask_holder[0].bool()] if x.dim() == 3 else x.reshape(-1, x.shape[-1])
            tokens = tokens.double()
            grams[name].gram += tokens.T @ tokens
            grams[name].count += tokens.shape[0]
            if name == stop_after:
                raise _StopForward

        return hook

    handles = [modules[name].register_forward_pre_hook(make_hook(name)) for name in names]
    try:
        yield grams, mask_holder
    finally:
        for handle in handles:
            handle.remove()


def collect_grams(encoder: nn.Module, names: Sequence[str], batches: Sequence[Batch], stop_early: bool = True) -> dict[str, InputGram]:
    """Run ``batches`` through ``encoder`` and accumulate each named Linear's input Gram (padding excluded).

    With ``stop_early`` the forward stops once the last named Linear (in forward order) has its input.
    """
    body = encoder_body(encoder)
    with _gram_hooks(body, names, names[-1] if stop_early else None) as (grams, mask_holder), torch.inference_mode():
        for batch in batches:
            mask_holder[:] = [batch.attention_mask]
            try:
                encoder(batch.input_ids, batch.attention_mask)
            except _StopForward:
                pass
    return grams


def _grams_from_stats(stats: object, names: Sequence[str]) -> dict[str, InputGram] | None:
    """Per-Linear Grams from an ``icd.calibrate.CalibrationStats`` (its ``inputs`` table), when it has them all.

    The statistics must describe the model as it is now (taken after any permutation was folded in).
    """
    layers = getattr(stats, "inputs", stats)
    out = {}
    for name in names:
        entry = layers.get(name) if isinstance(layers, dict) else None
        gram = getattr(entry, "gram", None)
        if gram is None:
            return None
        out[name] = InputGram(torch.as_tensor(gram, dtype=torch.float64), int(getattr(entry, "count", 1)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Methods


def magnitude_prune(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Weights with the ``n`` largest ``|w|`` kept per group of ``m`` inputs, the rest zero."""
    return weight * nm_mask(weight.abs(), n, m)


def wanda_prune(weight: torch.Tensor, input_norms: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Weights with the ``n`` largest ``|w_ij| · ‖x_j‖`` kept per group of ``m`` inputs."""
    scores = weight.abs().double() * input_norms.double().unsqueeze(0)
    return weight * nm_mask(scores, n, m)


def _inverse_hessian_chol(hessian: torch.Tensor, damp: float) -> torch.Tensor:
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
    raise ValueError("sparsegpt: Hessian is not positive definite even after damping")


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
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_hessian_chol(h, damp)
    block = max(m, blocksize - blocksize % m)
    prune = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        prune1 = prune[:, i1:i2]
        for i in range(i2 - i1):
            if i % m == 0:
                scores = w1[:, i : i + m] ** 2 / hinv1.diagonal()[i : i + m].unsqueeze(0) ** 2
                drop = scores.topk(m - n, dim=1, largest=False).indices
                prune1[:, i : i + m].scatter_(1, drop, True)
            col = w1[:, i]
            q = col.masked_fill(prune1[:, i], 0.0)
            q1[:, i] = q
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, ~prune


def _prepared_hessian(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``H + λI`` (float64, λ = damp · mean diag) with dead inputs (zero diagonal) given a unit diagonal, and the
    dead-input mask."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    lam = damp * float(h.diagonal().mean().clamp(min=1e-12))
    h.diagonal().add_(lam)
    return h, dead


def _support_indices(keep: torch.Tensor) -> torch.Tensor:
    """``rows × k`` column indices of ``keep`` (every row must keep the same number of columns)."""
    counts = keep.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise ValueError("refit: every row must keep the same number of weights")
    return keep.nonzero()[:, 1].reshape(keep.shape[0], int(counts[0]))


def _row_chunks(rows: int, k: int, budget_bytes: int = 1 << 27) -> int:
    return max(1, min(rows, budget_bytes // max(1, 8 * k * k)))


def _solve_supports(
    b: torch.Tensor, h: torch.Tensor, keep: torch.Tensor, with_costs: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per row ``r`` with support ``S``: ``w_S = (h_SS)⁻¹ b_S`` (zero elsewhere), and with ``with_costs`` the OBS
    removal cost ``w_i² / [(h_SS)⁻¹]_ii`` of every kept weight (+inf elsewhere). Rows go in chunks (batched
    Cholesky)."""
    idx = _support_indices(keep)
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
    h, dead = _prepared_hessian(hessian, damp)
    t = target.double().clone()
    t[:, dead] = 0.0
    return _solve_supports(t @ h, h, keep)[0]


def row_errors(weight: torch.Tensor, target: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Per-row ``(w − t)ᵀ(H + λI)(w − t)``: the calibration objective SparseGPT and the re-fit minimise."""
    h, _ = _prepared_hessian(hessian, damp)
    delta = weight.double() - target.double()
    return ((delta @ h) * delta).sum(dim=1)


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
    h, dead = _prepared_hessian(hessian, damp)
    t = target.double().clone()
    t[:, dead] = 0.0
    b = t @ h
    rows, cols = t.shape
    grouped = cols - fixed
    if grouped % m:
        raise ValueError(f"improve_mask: {grouped} grouped columns is not a multiple of m={m}")
    w, cost = _solve_supports(b, h, keep, with_costs=True)
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
        w_new, cost_new = _solve_supports(b, h, new_keep, with_costs=True)
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


# ----------------------------------------------------------------------------------------------------------------
# Layer-wise sequential calibration


@dataclass
class _LayerCall:
    """How one batch enters an encoder layer: hidden states plus the other arguments the model passed."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict
    token_mask: torch.Tensor


def _capture_layer_calls(encoder: nn.Module, layer: nn.Module, batches: Sequence[Batch]) -> list[_LayerCall]:
    calls: list[_LayerCall] = []
    current: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(_LayerCall(args[0], tuple(args[1:]), dict(kwargs), current[0].bool()))
        raise _StopForward

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.inference_mode():
            for batch in batches:
                current[:] = [batch.attention_mask]
                try:
                    encoder(batch.input_ids, batch.attention_mask)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return calls


def _run_layer(layer: nn.Module, call: _LayerCall, hidden: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = layer(hidden, *call.args, **call.kwargs)
    return out[0] if isinstance(out, tuple) else out


def _linear_input(layer: nn.Module, module_name: str, call: _LayerCall, hidden: torch.Tensor) -> torch.Tensor:
    """Input tokens (non-padding rows, float64) of ``layer``'s sub-module ``module_name`` for one batch."""
    return _linear_io(layer, module_name, call, hidden, residual=False)[0]


def _residual_parent(layer: nn.Module, module_name: str) -> nn.Module | None:
    """The ``…Output`` block around ``module_name`` when it computes ``LayerNorm(dense(h) + input_tensor)``."""
    parent_name, _, leaf = module_name.rpartition(".")
    if leaf != "dense" or not parent_name:
        return None
    parent = layer.get_submodule(parent_name)
    return parent if isinstance(getattr(parent, "LayerNorm", None), nn.LayerNorm) else None


def _linear_io(
    layer: nn.Module, module_name: str, call: _LayerCall, hidden: torch.Tensor, residual: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Input tokens of ``module_name`` and, with ``residual``, the residual its output is added to (float64)."""
    captured: dict[str, torch.Tensor] = {}
    parent = _residual_parent(layer, module_name) if residual else None

    def parent_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["residual"] = args[1] if len(args) > 1 else kwargs["input_tensor"]

    def hook(_module: nn.Module, args: tuple) -> None:
        captured["input"] = args[0]
        raise _StopForward

    handles = [layer.get_submodule(module_name).register_forward_pre_hook(hook)]
    if parent is not None:
        handles.append(parent.register_forward_pre_hook(parent_hook, with_kwargs=True))
    try:
        _run_layer(layer, call, hidden)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    res = captured.get("residual")
    return captured["input"][call.token_mask].double(), None if res is None else res[call.token_mask].double()


@dataclass
class _GroupStats:
    """Gram of the (sparse-model) inputs, and their cross product with the dense model's inputs."""

    gram: InputGram
    cross: torch.Tensor | None = None  # X̂ᵀ X (in × in), only with error feedback
    dense_gram: torch.Tensor | None = None  # Xᵀ X of the dense model's inputs, only with error feedback
    sum_hat: torch.Tensor | None = None  # Σ x̂ over tokens (sequential pass only; for bias correction)
    sum_dense: torch.Tensor | None = None  # Σ x of the dense model's inputs, only with error feedback
    cross_resid: torch.Tensor | None = None  # X̂ᵀ (R − R̂) (in × out), only with residual feedback
    sum_resid: torch.Tensor | None = None  # Σ (R − R̂) over tokens (out), only with residual feedback


def _group_stats(
    layer: nn.Module, dense_layer: nn.Module | None, module_name: str, calls: Sequence[_LayerCall],
    hidden: Sequence[torch.Tensor], dense_hidden: Sequence[torch.Tensor] | None, residual: bool = False,
) -> _GroupStats:
    linear = layer.get_submodule(module_name)
    in_features = linear.in_features
    residual = residual and dense_layer is not None and _residual_parent(layer, module_name) is not None
    cross_resid = torch.zeros(in_features, linear.out_features, dtype=torch.float64) if residual else None
    sum_resid = torch.zeros(linear.out_features, dtype=torch.float64) if residual else None
    gram = InputGram(torch.zeros(in_features, in_features, dtype=torch.float64))
    cross = None if dense_layer is None else torch.zeros_like(gram.gram)
    dense_gram = None if dense_layer is None else torch.zeros_like(gram.gram)
    sum_hat = torch.zeros(in_features, dtype=torch.float64)
    sum_dense = None if dense_layer is None else torch.zeros_like(sum_hat)
    for k, call in enumerate(calls):
        x_hat, r_hat = _linear_io(layer, module_name, call, hidden[k], residual)
        gram.gram += x_hat.T @ x_hat
        gram.count += x_hat.shape[0]
        sum_hat += x_hat.sum(dim=0)
        if cross is not None and dense_gram is not None and dense_layer is not None and dense_hidden is not None:
            x, r = _linear_io(dense_layer, module_name, call, dense_hidden[k], residual)
            if cross_resid is not None and sum_resid is not None and r is not None and r_hat is not None:
                cross_resid += x_hat.T @ (r - r_hat)
                sum_resid += (r - r_hat).sum(dim=0)
            cross += x_hat.T @ x
            dense_gram += x.T @ x
            sum_dense += x.sum(dim=0)  # type: ignore[operator]
    return _GroupStats(gram, cross, dense_gram, sum_hat, sum_dense, cross_resid, sum_resid)


def _feedback_target(weight: torch.Tensor, stats: _GroupStats, damp: float) -> torch.Tensor:
    """Unconstrained least-squares weights for the sparse inputs: ``W (X̂ᵀX)ᵀ (X̂ᵀX̂ + λI)⁻¹``."""
    if stats.cross is None:
        return weight
    h = stats.gram.gram
    lam = damp * h.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    rhs = stats.cross @ weight.double().T  # X̂ᵀ X Wᵀ
    if stats.cross_resid is not None:
        rhs = rhs + stats.cross_resid  # + X̂ᵀ (R − R̂): also undo the residual stream's error
    return torch.linalg.solve(h + lam * eye, rhs).T


def _augmented_problem(
    weight: torch.Tensor, bias: torch.Tensor, stats: _GroupStats, damp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares problem with the bias as one more, never-pruned input column of constant 1.

    Returns ``(Ĥₐ, tₐ)``: the mean Gram of ``[x̂, 1]`` and the target ``[W*, b*]`` (``[W, b]`` without error feedback;
    with it, the unconstrained fit of the dense outputs ``XWᵀ + b`` from ``[X̂, 1]``).
    """
    assert stats.sum_hat is not None
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
    target = torch.linalg.solve(h_aug + lam * eye, rhs).T
    return h_aug / count, target


def _mean_shift_bias(
    weight: torch.Tensor, bias: torch.Tensor, new: torch.Tensor, stats: _GroupStats
) -> torch.Tensor:
    """Bias moved by the mean output change, so mean outputs over the calibration tokens match the target's."""
    assert stats.sum_hat is not None
    s_target = stats.sum_dense if stats.sum_dense is not None else stats.sum_hat
    shift = weight.double() @ s_target - new.double() @ stats.sum_hat
    if stats.sum_resid is not None:
        shift = shift + stats.sum_resid
    shift = shift / max(stats.gram.count, 1)
    return (bias.double() + shift).to(bias.dtype)


def _normalized(norm: nn.LayerNorm, u: torch.Tensor) -> torch.Tensor:
    """``(u − mean) / sqrt(var + eps)`` over the last dimension, as ``norm`` computes before its affine map."""
    mean = u.mean(dim=-1, keepdim=True)
    var = u.var(dim=-1, unbiased=False, keepdim=True)
    return (u - mean) / torch.sqrt(var + norm.eps)


def _correct_layernorm(
    layer: nn.Module, dense_layer: nn.Module, norm_name: str, calls: Sequence[_LayerCall],
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
        n_hat = _normalized(norm, _linear_input(layer, norm_name, call, hidden[k]))
        with torch.inference_mode():
            target = dense_norm(_linear_input(dense_layer, norm_name, call, dense_hidden[k]).to(dense_norm.weight.dtype))
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
    calls = _capture_layer_calls(encoder, layers[0], batches)
    hidden = [c.hidden for c in calls]
    dense_hidden = list(hidden) if feedback else None
    results = []
    for index in range(max(by_layer) + 1):
        layer = layers[index]
        dense_layer = copy.deepcopy(layer) if feedback else None
        for group in input_groups(by_layer.get(index, [])):
            rel = _LAYER_NAME.match(group[0]).group(2)  # type: ignore[union-attr]
            stats = _group_stats(layer, dense_layer, rel, calls, hidden, dense_hidden,
                                 residual=config.residual_feedback and len(group) == 1)
            for name in group:
                results.append(_apply_one(name, linears[name], config, stats))
            parent = _residual_parent(layer, rel) if len(group) == 1 else None
            if config.layernorm_correction and parent is not None and dense_layer is not None and dense_hidden:
                _correct_layernorm(layer, dense_layer, rel.rpartition(".")[0] + ".LayerNorm", calls, hidden,
                                   dense_hidden)
        hidden = [_run_layer(layer, c, h) for c, h in zip(calls, hidden)]
        if dense_layer is not None and dense_hidden is not None:
            dense_hidden = [_run_layer(dense_layer, c, h) for c, h in zip(calls, dense_hidden)]
    return results


def _layer_report_vs_dense(
    name: str, old: torch.Tensor, new: torch.Tensor, stats: _GroupStats, bias_shift: torch.Tensor | None = None
) -> LayerSparsity:
    """``rel_error = ‖(XWᵀ + b) − (X̂Ŵᵀ + b̂)‖² / ‖XWᵀ‖²``: the sparse Linear on sparse-model inputs vs the dense one
    (``bias_shift = b − b̂``, None when the bias is unchanged)."""
    assert stats.cross is not None and stats.dense_gram is not None
    gram, cross, dense_gram = stats.gram, stats.cross, stats.dense_gram
    w, w_hat = old.double(), new.double()
    dense = torch.einsum("ij,jk,ik->", w, dense_gram, w).item()
    num = dense - 2 * (w_hat * (w @ cross.T)).sum().item() + torch.einsum("ij,jk,ik->", w_hat, gram.gram, w_hat).item()
    if bias_shift is not None and stats.sum_hat is not None and stats.sum_dense is not None:
        col_sum = w @ stats.sum_dense - w_hat @ stats.sum_hat  # Σ over tokens of the weights' output error
        num += 2 * float(bias_shift @ col_sum) + gram.count * float(bias_shift @ bias_shift)
    return LayerSparsity(
        name=name, out_features=old.shape[0], in_features=old.shape[1],
        kept_fraction=float((new != 0).double().mean()),
        rel_error=max(num, 0.0) / dense if dense > 0 else 0.0,
        error_kind="output_vs_dense", calibration_tokens=gram.count,
    )


# ----------------------------------------------------------------------------------------------------------------
# Driver


def _sparsify(
    weight: torch.Tensor, bias: torch.Tensor | None, config: NMSparsityConfig, stats: _GroupStats | None
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
        return new, _mean_shift_bias(weight, bias, new, stats) if fit_bias else None  # type: ignore[arg-type]
    target = _feedback_target(weight, stats, damp)
    new, keep = _sparsegpt(target, stats.gram.hessian, n, m, config.blocksize, damp)
    if not (config.refit or config.mask_rounds):
        new = new.to(weight.dtype)
        return new, _mean_shift_bias(weight, bias, new, stats) if fit_bias else None  # type: ignore[arg-type]
    hessian, fixed = stats.gram.hessian, 0
    if fit_bias:
        hessian, target = _augmented_problem(weight, bias, stats, damp)  # type: ignore[arg-type]
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
        grams = _grams_from_stats(context.stats, names)
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


def _stats_of(grams: dict[str, InputGram] | None, name: str) -> _GroupStats | None:
    return None if grams is None else _GroupStats(grams[name], None)


def _apply_one(name: str, linear: nn.Linear, config: NMSparsityConfig, stats: _GroupStats | None) -> LayerSparsity:
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
