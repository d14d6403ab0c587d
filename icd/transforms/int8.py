"""Dynamic int8 quantization of named Linears (:class:`icd.transforms.int8_kernels.DynamicInt8Linear`, CPU).

Two levels:

* :func:`quantize_linears_` — the deterministic step the runtime replays at model load: replace exactly the named
  fp32 Linears (as in ``encoder.bert.named_modules()``) by int8 Linears with the recorded scheme.
* :func:`prepare_int8_runtime` — the search behind ``Int8Config``: SmoothQuant-style smoothing with a migration
  strength chosen per Linear by its measured int8 output error on calibration text (measured with the very
  kernel that will serve it), the V→O part folded into the fp32 weights, the rest a runtime input scale; then,
  within ``auto_keep_fp32``, the Linears whose int8 version costs the most measured end-to-end fidelity
  (calibration text only) stay fp32 until ``cos_target`` holds. It returns the runtime record
  (:mod:`icd.transforms.runtime`) and a report saying what stayed fp32 and why.

Schemes (:class:`QScheme`): ``per_token`` (default: one activation scale per token on the ``per_token_scope``
Linears, per-output-channel weights), ``per_channel`` and ``per_tensor`` (one activation scale per call; weight
scales per output channel / per tensor). Activations are 8-bit where the CPU has VNNI (``reduce_range``).

Example:
    >>> from icd.transforms.api import optimize_, TransformContext           # doctest: +SKIP
    >>> optimize_(encoder, Int8Config(), TransformContext(tokenizer=tok, calibration_texts=cal))
"""

from __future__ import annotations

import copy
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from icd.calibrate.collector import input_absmax
from icd.model.families import family_of
from icd.model.layout import model_shape
from icd.transforms.api import TransformContext, TransformKind, register_transform
from icd.transforms.configs import Int8Config
from icd.transforms.int8_kernels import DynamicInt8Linear, default_reduce_range, vnni_supported
from icd.transforms.int8_rounding import (
    check_codes,
    gptq_codes,
    kernel_hessian,
    kernel_weight,
    output_errors,
    round_nearest,
)
from icd.transforms.smoothing import InputScaled, fold_value_output_scale_, scale_of, smoothing_exponents

SMOOTH_MIN_GAIN = 0.10
"""Smooth a Linear only when its measured int8 output error drops by at least this fraction."""
DEFAULT_ENGINE = "onednn"
"""Measured on the shared 2-core machine at 1 thread, MiniLM 8x128: onednn int8 2.2-2.5x faster than fp32,
x86/fbgemm 1.5-1.6x (bench/int8.py, docs/int8.md); 2-thread figures were not measurable there (contention)."""


class QScheme(str, Enum):
    """How int8 weights and activations are scaled (activations are quantized on every call)."""

    PER_TENSOR = "per_tensor"
    """One weight scale per matrix, one activation scale per call (torch's ``default_dynamic_qconfig``)."""
    PER_CHANNEL = "per_channel"
    """One weight scale per output channel, one activation scale per call."""
    PER_TOKEN = "per_token"
    """One weight scale per output channel; one activation scale per token (row) on the recorded per-token
    Linears, one per call on the others."""


def linear_names(encoder: nn.Module) -> list[str]:
    """Names of the fp32 Linears of the BERT body (``nn.Linear``, possibly inside an ``InputScaled``)."""
    names = []
    for name, module in encoder.bert.named_modules():
        if type(module) is nn.Linear and not name.endswith(".inner"):
            names.append(name)
        elif isinstance(module, InputScaled) and type(module.inner) is nn.Linear:
            names.append(name)
    return names


_NAMED_SCOPES: dict[str, tuple[str, ...]] = {
    "all": ("query", "key", "value", "attn_out", "ffn_in", "ffn_out"),
    "ffn": ("ffn_in", "ffn_out"),
    "attention": ("query", "key", "value", "attn_out"),
    "ffn_in": ("ffn_in",),
    "ffn_out": ("ffn_out",),
}
"""Named scope → the Linear roles it selects (where each role lives is the model family's:
:mod:`icd.model.families`)."""


def layer_roles(encoder: nn.Module) -> dict[str, str]:
    """Name → role of every per-layer Linear of the encoder (the ones int8 may quantize)."""
    return {name: role for name, (_, role) in family_of(encoder).roles_by_name(model_shape(encoder).layers).items()}


def resolve_scope(encoder: nn.Module, scope: str, keep_fp32: Sequence[str] = ()) -> list[str]:
    """The Linear names ``scope`` selects, minus ``keep_fp32`` (regexes).

    ``scope``: ``all`` / ``ffn`` / ``attention`` / ``ffn_in`` (the FFN's input Linear: BERT's
    intermediate.dense) / ``ffn_out`` (the FFN's output Linear: BERT's output.dense) or a regex over the names.
    Only per-layer Linears are selected (never the pooler or a classification head).

    Raises:
        ValueError: an invalid regex, or a scope that selects nothing.
    """
    roles = layer_roles(encoder)
    names = [n for n in linear_names(encoder) if n in roles]
    if scope in _NAMED_SCOPES:
        chosen = [n for n in names if roles[n] in _NAMED_SCOPES[scope]]
    else:
        try:
            pattern = re.compile(scope)
        except re.error as exc:
            raise ValueError(f"int8 scope {scope!r} is not one of {sorted(_NAMED_SCOPES)} nor a regex: {exc}") from None
        chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        raise ValueError(f"int8 scope {scope!r} selects no Linear of the model")
    try:
        keep = [re.compile(k) for k in keep_fp32]
    except re.error as exc:
        raise ValueError(f"int8.keep_fp32: invalid regex: {exc}") from None
    return [n for n in chosen if not any(k.search(n) for k in keep)]


def int8_linear(
    linear: nn.Linear, scheme: QScheme | str = QScheme.PER_CHANNEL, engine: str | None = DEFAULT_ENGINE,
    reduce_range: bool = True, per_token: bool | None = None, inv_scale: torch.Tensor | None = None,
    fp32_channels: torch.Tensor | None = None, weight_codes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DynamicInt8Linear:
    """An int8 copy of ``linear`` (``linear`` itself is not changed).

    Args:
        scheme: weight / activation scaling; ``per_token`` needs ``per_token`` true or None (None: per-token
            activations exactly when the scheme is ``per_token``).
        engine: torch quantized engine the weights are packed for (None: the current global one).
        reduce_range: 7-bit activations (torch's historical default) instead of 8-bit.
        inv_scale: smoothing multiplier applied to the input first (``linear`` already holds the scaled weight).
        fp32_channels: input channels multiplied in fp32 outside the int8 product (:class:`DynamicInt8Linear`).
        weight_codes: icd's int8 codes and scales of the packed weight (:mod:`icd.transforms.int8_rounding`).

    Raises:
        ValueError: per-token activations asked for with another scheme, or an unsupported engine.
    """
    scheme = QScheme(scheme)
    token = scheme == QScheme.PER_TOKEN if per_token is None else bool(per_token)
    if token and scheme != QScheme.PER_TOKEN:
        raise ValueError(f"int8: per-token activation scales need qscheme 'per_token', not {scheme.value!r}")
    return DynamicInt8Linear(linear, per_token=token, per_channel=scheme != QScheme.PER_TENSOR,
                             reduce_range=reduce_range, engine=engine, inv_scale=inv_scale,
                             fp32_channels=fp32_channels, weight_codes=weight_codes)


def _check_engine(engine: str | None) -> None:
    supported = torch.backends.quantized.supported_engines
    if engine is not None and engine not in supported:
        raise ValueError(f"int8 engine {engine!r} is not supported by this torch build (supported: {supported})")


def quantize_linears_(
    encoder: nn.Module, names: Sequence[str], scheme: QScheme | str = QScheme.PER_CHANNEL,
    engine: str | None = DEFAULT_ENGINE, reduce_range: bool = True, per_token: Sequence[str] | None = None,
    fp32_channels: Mapping[str, torch.Tensor] | None = None,
    weight_codes: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> None:
    """Replace the named fp32 Linears of ``encoder.bert`` by :class:`DynamicInt8Linear`, in place.

    A name may point at an ``InputScaled`` wrapper (a smoothed Linear): the wrapper and its Linear become one
    int8 Linear that applies the input scale itself.

    Args:
        scheme: see :class:`QScheme`.
        engine: torch quantized engine the weights are packed for (None: the current global one).
        reduce_range: 7-bit activations (the historical default of torch and of icd records) instead of 8-bit.
        per_token: with ``scheme`` ``per_token``, the names (a subset of ``names``) given per-token activation
            scales; None = all of them.
        fp32_channels: per Linear (a subset of ``names``), the input channels multiplied in fp32.
        weight_codes: None (torch rounds each weight to the nearest grid point), or for every name the int8
            codes and per-channel scales icd chose (GPTQ; :mod:`icd.transforms.int8_rounding`).

    Raises:
        ValueError: a name is not an fp32 Linear of ``encoder.bert`` (unknown or already quantized), per-token
            names outside ``names`` or without the ``per_token`` scheme, or an unsupported engine.
    """
    scheme = QScheme(scheme)
    tokens = set(names) if per_token is None and scheme == QScheme.PER_TOKEN else set(per_token or ())
    if tokens and scheme != QScheme.PER_TOKEN:
        raise ValueError(f"int8: per-token Linears need qscheme 'per_token', not {scheme.value!r}")
    outside = sorted(tokens - set(names))
    if outside:
        raise ValueError(f"int8: per-token Linears that are not quantized: {outside}")
    channels = dict(fp32_channels or {})
    outside = sorted(set(channels) - set(names))
    if outside:
        raise ValueError(f"int8: fp32 channels for Linears that are not quantized: {outside}")
    _check_engine(engine)
    modules = dict(encoder.bert.named_modules())
    checked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in names:
        module = modules.get(name)
        target = module.inner if isinstance(module, InputScaled) else module
        if type(target) is not nn.Linear:
            raise ValueError(f"int8: {name!r} is not an fp32 nn.Linear of the model")
        if weight_codes is not None:
            checked[name] = check_codes(weight_codes, name, target.out_features, target.in_features)
    if names and not reduce_range and not vnni_supported():
        warnings.warn("int8: 8-bit activations (reduce_range false) on a CPU without VNNI: u8*s8 int16 "
                      "accumulation may saturate; quantize with reduce_range true here", RuntimeWarning, stacklevel=2)
    for name in names:
        module = modules[name]
        inner, inv_scale = (module.inner, module.inv_scale) if isinstance(module, InputScaled) else (module, None)
        parent_name, _, leaf = name.rpartition(".")
        parent = encoder.bert.get_submodule(parent_name) if parent_name else encoder.bert
        setattr(parent, leaf, int8_linear(inner, scheme, engine, reduce_range, name in tokens, inv_scale,
                                          channels.get(name), checked.get(name)))


def quantized_names(encoder: nn.Module) -> list[str]:
    """Names (as in ``encoder.bert``) of the int8 Linears currently in the model."""
    return [name for name, module in encoder.bert.named_modules() if isinstance(module, DynamicInt8Linear)]


def per_token_names(encoder: nn.Module) -> list[str]:
    """Names of the int8 Linears of the model that quantize their input per token."""
    return [name for name, module in encoder.bert.named_modules()
            if isinstance(module, DynamicInt8Linear) and module.per_token]


# ---------------------------------------------------------------------------------------------------- the search


@dataclass
class _ErrorAccumulator:
    """Σ‖ŷ − y‖² and Σ‖y‖² of one Linear's int8 output per candidate migration strength."""

    candidates: dict[float | None, nn.Module]
    err: dict[float | None, float] = field(default_factory=dict)
    norm: float = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.norm += float(y.double().pow(2).sum())
        for alpha, qlinear in self.candidates.items():
            self.err[alpha] = self.err.get(alpha, 0.0) + float((qlinear(x) - y).double().pow(2).sum())

    def relative(self, alpha: float | None) -> float:
        return self.err.get(alpha, 0.0) / max(self.norm, 1e-30)

    def best(self) -> float:
        """The lowest relative error over the candidates."""
        return min(self.relative(alpha) for alpha in self.candidates)


def _input_absmax(encoder: nn.Module, names: Sequence[str], batches: Sequence[Any], padded_rows: bool = False,
                  outputs: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """:func:`icd.calibrate.collector.input_absmax` of the named Linears (names as in ``encoder.bert``)."""
    modules = dict(encoder.bert.named_modules())
    return input_absmax(encoder, {n: modules[n] for n in names}, ((b.input_ids, b.attention_mask) for b in batches),
                        padded_rows=padded_rows, outputs=outputs)


def _activation_ranges(encoder: nn.Module, names: Sequence[str],
                       context: TransformContext) -> tuple[dict[str, torch.Tensor], str]:
    """Each Linear's input range over the calibration texts, and where it came from: ``context.stats`` (a
    calibration of this very model, as the pipeline passes it) when it covers every name, else one pass over the
    texts."""
    inputs = getattr(context.stats, "inputs", None)
    if inputs is not None and all(n in inputs for n in names):
        ranges = {n: torch.from_numpy(inputs[n].absmax).to(torch.float32) for n in names}
        return ranges, "the calibration statistics of this model"
    return _input_absmax(encoder, names, context.calibration_batches()), "measured: one pass over the calibration texts"


def _kernel_ranges(encoder: nn.Module, names: Sequence[str], context: TransformContext,
                   batches: Sequence[Any]) -> tuple[dict[str, torch.Tensor], str, torch.Tensor]:
    """The ranges smoothing is chosen from: the calibration texts' real tokens (:func:`_activation_ranges`),
    widened by every row of the padded search ``batches``; and the fp32 output of those batches (the search's
    reference: the V->O fold that follows is exact, powers of two, so the folded model computes it too).

    A per-call kernel's range at run time includes the padded rows of its batch; smoothing exponents chosen from
    real tokens alone turn a padded row's wide channels into outliers of that range (measured on MiniLM: cos 0.99834
    instead of 0.99898 for ``Int8Config()``; docs/int8.md). The widening pass is also the reference pass, so it
    costs no forward the search did not already run.
    """
    ranges, how = _activation_ranges(encoder, names, context)
    outputs: list[torch.Tensor] = []
    padded = _input_absmax(encoder, names, batches, padded_rows=True, outputs=outputs)
    widened = {n: torch.maximum(ranges[n], padded[n]) for n in names}
    return widened, f"{how}, widened by the padded rows of the search texts", torch.cat(outputs)


def _run(encoder: nn.Module, batches: Sequence[Any]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([encoder(b.input_ids, b.attention_mask).float() for b in batches])


@dataclass(frozen=True)
class _Kernel:
    """The int8 kernel settings of a search: what each Linear will be served with."""

    scheme: QScheme
    engine: str
    reduce_range: bool
    per_token: frozenset[str]

    def linear(self, name: str, linear: nn.Linear, inv_scale: torch.Tensor | None = None) -> DynamicInt8Linear:
        return int8_linear(linear, self.scheme, self.engine, self.reduce_range, name in self.per_token, inv_scale)


def _measure_errors(
    encoder: nn.Module, names: Sequence[str], batches: Sequence[Any], absmax: dict[str, torch.Tensor],
    alphas: Sequence[float], kernel: _Kernel,
) -> dict[str, _ErrorAccumulator]:
    """Int8 output error of each Linear, unsmoothed and smoothed with each alpha, on its real fp32 inputs."""
    modules = dict(encoder.bert.named_modules())
    accumulators: dict[str, _ErrorAccumulator] = {}
    for name in names:
        linear = modules[name]
        candidates: dict[float | None, nn.Module] = {None: kernel.linear(name, linear)}
        for alpha in alphas:
            k = smoothing_exponents(absmax[name], linear.weight, alpha)
            smoothed = copy.deepcopy(linear)
            with torch.no_grad():
                smoothed.weight.mul_(scale_of(k))
            candidates[alpha] = kernel.linear(name, smoothed, scale_of(-k))
        accumulators[name] = _ErrorAccumulator(candidates)

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            accumulators[name].add(inputs[0].detach(), output.detach())

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        _run(encoder, batches)
    finally:
        for handle in handles:
            handle.remove()
    return accumulators


@dataclass(frozen=True)
class SmoothingChoice:
    """What the search chose for one Linear: its alpha (None = not smoothed) and the measured errors."""

    name: str
    alpha: float | None
    exponents: torch.Tensor | None
    rel_error_plain: float
    rel_error_chosen: float
    folded: bool

    def to_dict(self) -> dict[str, Any]:
        where = "none" if self.alpha is None else "V->O fold (fp32 weights)" if self.folded else "runtime input scale"
        return {
            "name": self.name, "alpha": self.alpha, "where": where,
            "rel_output_error_int8_plain": self.rel_error_plain,
            "rel_output_error_int8_chosen": self.rel_error_chosen,
        }


def _choose(
    name: str, acc: _ErrorAccumulator, absmax: torch.Tensor, weight: torch.Tensor, min_error: float, folded: bool
) -> SmoothingChoice:
    """The alpha with the lowest measured error; none when the gain is small or not worth a runtime multiply.

    ``folded``: the Linear is an attention output, whose input scale folds into the value rows (V->O)."""
    plain = acc.relative(None)
    best = min((a for a in acc.candidates if a is not None), key=acc.relative, default=None)
    worth_it = folded or plain >= min_error
    if best is None or not worth_it or acc.relative(best) > (1.0 - SMOOTH_MIN_GAIN) * plain:
        return SmoothingChoice(name, None, None, plain, plain, False)
    exponents = smoothing_exponents(absmax, weight, best)
    return SmoothingChoice(name, best, exponents, plain, acc.relative(best), folded)


def _alphas(config: Int8Config) -> list[float]:
    if config.smooth_alpha is None:
        return []
    return sorted({config.smooth_alpha, *config.alpha_grid})


def _cos_mean(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=1).mean())


def _search_batches(context: TransformContext | None, texts: int) -> list[Any]:
    if context is None or not context.has_calibration_data:
        return []
    batches, seen = [], 0
    for batch in context.calibration_batches():
        if seen >= texts:
            break
        batches.append(batch)
        seen += int(batch.input_ids.shape[0])
    return batches


def _value_of_attention_output(encoder: nn.Module) -> dict[str, str]:
    """Attention output Linear name → the value Linear of the same layer (the V->O fold pairs them)."""
    family = family_of(encoder)
    return {roles["attn_out"]: roles["value"]
            for roles in (family.linears(layer) for layer in range(model_shape(encoder).layers))}


def _smooth_and_fold(
    fp32: nn.Module, names: list[str], context: TransformContext, batches: list[Any], config: Int8Config,
    kernel: _Kernel, absmax: dict[str, torch.Tensor],
) -> list[SmoothingChoice]:
    """Choose each Linear's smoothing by measured int8 output error; fold the V->O ones into ``fp32``.

    Activation ranges (``absmax``) come from every calibration text (:func:`_activation_ranges`); errors from
    the ``batches`` subset.
    """
    errors = _measure_errors(fp32, names, batches, absmax, _alphas(config), kernel)
    modules = dict(fp32.bert.named_modules())
    value_of = _value_of_attention_output(fp32)
    choices = [_choose(n, errors[n], absmax[n], modules[n].weight, config.smooth_min_error, n in value_of)
               for n in names]
    for choice in choices:
        if choice.folded and choice.exponents is not None:
            value = modules[value_of[choice.name]]
            fold_value_output_scale_(value, modules[choice.name], choice.exponents)
    return choices


@dataclass
class _Candidate:
    """Builds and measures int8 models from the fp32 model for a given set of quantized Linears."""

    fp32: nn.Module
    config: Int8Config
    kernel: _Kernel
    scales: dict[str, torch.Tensor]
    batches: list[Any]
    fp32_channels: dict[str, torch.Tensor] = field(default_factory=dict)
    reference: torch.Tensor | None = None

    @property
    def weight_rounding(self) -> str:
        """``gptq`` once :func:`_round_with_gptq` attached its codes to the fp32 model, else ``nearest``."""
        return "gptq" if getattr(self.fp32, "int8_weights", None) else "nearest"

    def record(self, quantized: Sequence[str]) -> dict[str, Any]:
        from icd.transforms.runtime import int8_runtime_record

        per_token = None
        if self.kernel.scheme == QScheme.PER_TOKEN:
            per_token = [n for n in quantized if n in self.kernel.per_token]
        return int8_runtime_record(list(quantized), self.kernel.scheme,
                                   {n: k for n, k in self.scales.items() if n in quantized}, engine=self.kernel.engine,
                                   reduce_range=self.kernel.reduce_range, per_token=per_token,
                                   fp32_channels={n: c for n, c in self.fp32_channels.items() if n in quantized},
                                   weight_rounding=self.weight_rounding)

    def calibration_cos(self, quantized: Sequence[str]) -> float:
        """Mean cosine vs fp32 on the search batches (calibration text) of the int8 model."""
        from icd.transforms.runtime import apply_runtime_transforms_

        if self.reference is None:
            self.reference = _run(self.fp32, self.batches)
        model = copy.deepcopy(self.fp32)
        apply_runtime_transforms_(model, [self.record(quantized)])
        return _cos_mean(self.reference, _run(model, self.batches))


def _keep_most_sensitive(
    candidate: _Candidate, quantized: list[str], report: dict[str, Any]
) -> list[dict[str, str]]:
    """Roll back the most sensitive Linears to fp32 (at most ``auto_keep_fp32``) until ``cos_target`` holds.

    Sensitivity = calibration cos_mean drop with only that Linear int8, measured for every quantized Linear (the
    per-Linear output error is a poor proxy: unsmoothed Q/K show large errors that softmax mostly absorbs).
    """
    config = candidate.config
    cos_now = report["calibration_cos_mean_all_int8"]
    if config.auto_keep_fp32 == 0 or cos_now >= config.cos_target:
        report["calibration_cos_mean"] = cos_now
        return []
    suspects, among = list(quantized), "every quantized Linear"
    sensitivity = {n: 1.0 - candidate.calibration_cos([n]) for n in suspects}
    report["sensitivity_cos_drop_alone"] = dict(sorted(sensitivity.items(), key=lambda kv: -kv[1]))
    report["sensitivity_how"] = f"calibration cos_mean drop with only that Linear int8, measured for {among}"
    kept = []
    for name in sorted(suspects, key=lambda n: -sensitivity[n])[: config.auto_keep_fp32]:
        if cos_now >= config.cos_target:
            break
        quantized.remove(name)
        cos_now = candidate.calibration_cos(quantized)
        kept.append({"name": name, "reason": (
            f"most sensitive: int8 alone costs {sensitivity[name]:.2e} calibration cosine; calibration cos_mean "
            f"{cos_now:.5f} with it fp32 (target {config.cos_target})")})
    report["calibration_cos_mean"] = cos_now
    return kept


def _widest_channels(ranges: dict[str, torch.Tensor], choices: Sequence[SmoothingChoice],
                     count: int) -> dict[str, torch.Tensor]:
    """Per Linear, the ``count`` input channels with the widest range as the int8 kernel sees them (calibration
    max |x|, times the smoothing's ``2**-k`` where chosen): LLM.int8()'s outlier channels, kept in fp32."""
    if count <= 0:
        return {}
    exponents = {c.name: c.exponents for c in choices if c.exponents is not None}
    channels = {}
    for name, absmax in ranges.items():
        seen = absmax.double() * (scale_of(-exponents[name]).double() if name in exponents else 1.0)
        channels[name] = torch.topk(seen, min(count, seen.numel())).indices.sort().values
    return channels


def _kernel(fp32: nn.Module, config: Int8Config, names: Sequence[str]) -> _Kernel:
    """The configured kernel, with ``reduce_range`` resolved and the per-token Linears among ``names``."""
    scheme = QScheme(config.qscheme)
    reduce_range = default_reduce_range() if config.reduce_range is None else bool(config.reduce_range)
    per_token: frozenset[str] = frozenset()
    if scheme == QScheme.PER_TOKEN:
        try:
            per_token = frozenset(resolve_scope(fp32, config.per_token_scope)) & frozenset(names)
        except ValueError as exc:
            raise ValueError(f"int8.per_token_scope: {exc}") from None
    return _Kernel(scheme, config.engine, reduce_range, per_token)


def _pick_per_token(
    fp32: nn.Module, config: Int8Config, kernel: _Kernel, batches: Sequence[Any], report: dict[str, Any]
) -> _Kernel:
    """Keep per-token scales only on the ``per_token_max`` Linears where they lower the measured error most.

    Each candidate's relative int8 output error (best over the smoothing strengths) is measured on its real fp32
    inputs with one activation scale per call and with per-token scales; the gain is the difference.
    """
    limit = config.per_token_max
    if limit is None or len(kernel.per_token) <= limit:
        return kernel
    if not batches:  # nothing to measure with: the configured scope stands (the report's note says no search ran)
        return kernel
    candidates = sorted(kernel.per_token)
    chosen: frozenset[str] = frozenset()
    if limit:
        absmax = _input_absmax(fp32, candidates, batches)
        per_call = _measure_errors(fp32, candidates, batches, absmax, _alphas(config),
                                   _Kernel(kernel.scheme, kernel.engine, kernel.reduce_range, frozenset()))
        per_token = _measure_errors(fp32, candidates, batches, absmax, _alphas(config), kernel)
        gains = {n: per_call[n].best() - per_token[n].best() for n in candidates}
        chosen = frozenset(sorted(candidates, key=lambda n: -gains[n])[:limit])
        report["per_token_selection"] = [
            {"name": n, "rel_output_error_per_call": per_call[n].best(),
             "rel_output_error_per_token": per_token[n].best(), "chosen": n in chosen} for n in candidates]
    return _Kernel(kernel.scheme, kernel.engine, kernel.reduce_range, chosen)


def prepare_int8_runtime(
    fp32: nn.Module, config: Int8Config, context: TransformContext | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose smoothing and fp32 exceptions for ``config``; fold the foldable part into ``fp32`` (in place).

    ``fp32`` stays an fp32 model computing the same function (only V→O scalings are folded into it; with
    ``weight_rounding: gptq`` the int8 codes are attached as ``fp32.int8_weights``, its weights unchanged); the
    int8 model is ``apply_runtime_transforms_(copy.deepcopy(fp32), [record])``.

    Args:
        fp32: the model after every weight transform (an ``Encoder``).
        config: the int8 settings.
        context: calibration batches (never held-out text). Without them nothing data-aware is done: no
            smoothing, no fp32 exceptions beyond ``keep_fp32``; the report says so.

    Returns:
        ``(record, report)``: the runtime record and a JSON-ready report (per-Linear choices, measured errors,
        which Linears stayed fp32 and the measured reason).
    """
    names = resolve_scope(fp32, config.scope, config.keep_fp32)
    if getattr(fp32, "int8_weights", None):
        fp32.int8_weights = {}  # codes of an earlier search (e.g. a loaded GPTQ run) belong to that record
    kernel = _kernel(fp32, config, names)
    kept = [{"name": n, "reason": "not in scope or matched keep_fp32"} for n in linear_names(fp32) if n not in names]
    batches = _search_batches(context, config.search_texts)
    report: dict[str, Any] = {"type": "int8", "qscheme": kernel.scheme.value, "engine": kernel.engine,
                              "activation_bits": 7 if kernel.reduce_range else 8, "cpu_vnni": vnni_supported(),
                              "search_texts": sum(int(b.input_ids.shape[0]) for b in batches)}
    kernel = _pick_per_token(fp32, config, kernel, batches, report)
    choices: list[SmoothingChoice] = []
    ranges: dict[str, torch.Tensor] = {}
    reference = None
    if batches and (_alphas(config) or config.outlier_channels):
        ranges, report["activation_ranges"], reference = _kernel_ranges(fp32, names, context, batches)
    if batches and _alphas(config):
        choices = _smooth_and_fold(fp32, names, context, batches, config, kernel, ranges)
    elif not batches:
        report["note"] = "no calibration data: no smoothing search, no measured fp32 exceptions, no fp32 channels"
    report["smoothing"] = [c.to_dict() for c in choices]
    scales = {c.name: c.exponents for c in choices if c.exponents is not None and not c.folded}
    channels = _widest_channels(ranges, choices, config.outlier_channels)
    if channels:
        report["fp32_channels"] = {"per_linear": config.outlier_channels, "how": (
            "the input channels with the widest calibration range after smoothing, multiplied in fp32 outside the "
            "int8 product")}
    candidate = _Candidate(fp32, config, kernel, scales, batches, channels, reference)
    quantized = list(names)
    if batches:
        report["calibration_cos_mean_all_int8"] = candidate.calibration_cos(quantized)
        kept += _keep_most_sensitive(candidate, quantized, report)
    if config.weight_rounding == "gptq":
        report["weight_rounding"] = _round_with_gptq(candidate, quantized, context, choices)
        if batches and candidate.weight_rounding == "gptq":
            report["calibration_cos_mean_gptq"] = candidate.calibration_cos(quantized)
    report["kept_fp32"] = kept
    report["quantized"] = len(quantized)
    report["per_token"] = sorted(n for n in quantized if n in kernel.per_token)
    return candidate.record(quantized), report


def _linear_grams(fp32: nn.Module, names: Sequence[str], context: TransformContext,
                  choices: Sequence[SmoothingChoice]) -> tuple[dict[str, Any], str]:
    """Each Linear's input Gram in ``fp32`` as it is now (V->O folds included), and where it came from."""
    from icd.calibrate.gram import collect_grams, grams_from_stats

    grams = grams_from_stats(context.stats, names) if context.stats is not None else None
    if grams is not None:  # the statistics predate this search's V->O folds: O's input is now x * 2**-k
        for choice in choices:
            if choice.folded and choice.exponents is not None and choice.name in grams:
                grams[choice.name].gram = kernel_hessian(grams[choice.name].gram, choice.exponents, None)
        return grams, "the calibration statistics of this model"
    order = [n for n in linear_names(fp32) if n in set(names)]
    return collect_grams(fp32, order, context.calibration_batches()), "measured: one pass over the calibration texts"


def _round_with_gptq(candidate: _Candidate, quantized: Sequence[str], context: TransformContext | None,
                     choices: Sequence[SmoothingChoice]) -> dict[str, Any]:
    """GPTQ codes of every quantized Linear's kernel weight, attached to the fp32 model as ``int8_weights``.

    The fp32 weights are not changed (the fp32 model keeps computing the same function); the record says
    ``weight_rounding: gptq`` and the int8 model packs these codes.
    """
    if context is None or not context.has_calibration_data or not quantized:
        return {"method": "nearest", "note": "gptq asked, but no calibration data (or nothing quantized): weights "
                                             "rounded to the nearest grid point"}
    started = time.perf_counter()
    grams, source = _linear_grams(candidate.fp32, quantized, context, choices)
    modules = dict(candidate.fp32.bert.named_modules())
    codes, layers = {}, []
    for name in quantized:
        exponents = candidate.scales.get(name)
        channels = candidate.fp32_channels.get(name)
        weight = kernel_weight(modules[name].weight, exponents, channels)
        hessian = kernel_hessian(grams[name].hessian, exponents, channels)
        codes[name] = gptq_codes(weight, hessian)
        nearest, gptq = output_errors(weight, hessian, [round_nearest(weight), codes[name]])
        layers.append({"name": name, "rel_output_error_nearest": nearest, "rel_output_error_gptq": gptq})
    candidate.fp32.int8_weights = codes
    return {"method": "gptq", "hessians": source, "tokens": min(g.count for g in grams.values()),
            "seconds": time.perf_counter() - started,
            "rel_output_error_nearest_mean": sum(x["rel_output_error_nearest"] for x in layers) / len(layers),
            "rel_output_error_gptq_mean": sum(x["rel_output_error_gptq"] for x in layers) / len(layers),
            "layers": layers}


@register_transform(Int8Config, kind=TransformKind.RUNTIME, prepare=prepare_int8_runtime)
def _int8_handler(encoder: nn.Module, config: Int8Config, context: TransformContext | None) -> dict[str, Any]:
    """``optimize_(encoder, Int8Config(...), ctx)``: search, then quantize ``encoder`` in place; returns the report."""
    from icd.transforms.runtime import apply_runtime_transforms_

    record, report = prepare_int8_runtime(encoder, config, context)
    apply_runtime_transforms_(encoder, [record])
    report["record"] = record
    return report
