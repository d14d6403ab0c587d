"""Dynamic int8 quantization of named Linears (torch ``quantize_dynamic`` kernels, fbgemm/x86 on CPU).

Two levels:

* :func:`quantize_linears_` — the deterministic step the runtime replays at model load: replace exactly the named
  fp32 Linears (as in ``encoder.bert.named_modules()``) by ``torch.ao.nn.quantized.dynamic.Linear``.
* :func:`prepare_int8_runtime` — the search behind ``Int8Config``: SmoothQuant-style smoothing with a migration
  strength chosen per Linear by its measured int8 output error on calibration text, the V→O part folded into the
  fp32 weights, the rest a runtime input scale; then, within ``auto_keep_fp32``, the Linears whose int8 version
  costs the most measured end-to-end fidelity (calibration text only) stay fp32 until ``cos_target`` holds.
  It returns the runtime record (:mod:`icd.transforms.runtime`) and a report saying what stayed fp32 and why.

Example:
    >>> from icd.transforms.api import optimize_, TransformContext           # doctest: +SKIP
    >>> optimize_(encoder, Int8Config(auto_keep_fp32=2), TransformContext(tokenizer=tok, calibration_texts=cal))
"""

from __future__ import annotations

import contextlib
import copy
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import nn

from icd.transforms.api import TransformContext, register_transform
from icd.transforms.configs import Int8Config
from icd.transforms.smoothing import InputScaled, fold_value_output_scale_, scale_of, smoothing_exponents

SCOPE_FFN = ("intermediate.dense", "output.dense")
ATTENTION_OUTPUT = "attention.output.dense"
VALUE = "attention.self.value"
SMOOTH_MIN_GAIN = 0.10
"""Smooth a Linear only when its measured int8 output error drops by at least this fraction."""
DEFAULT_ENGINE = "onednn"
"""Measured on the shared 2-core machine at 1 thread, MiniLM 8x128: onednn int8 2.2-2.5x faster than fp32,
x86/fbgemm 1.5-1.6x (bench/int8.py, docs/int8.md); 2-thread figures were not measurable there (contention)."""


class QScheme(str, Enum):
    """How int8 weights are scaled."""

    PER_TENSOR = "per_tensor"
    """One scale for the whole weight matrix (``default_dynamic_qconfig``)."""
    PER_CHANNEL = "per_channel"
    """One scale per output row (``per_channel_dynamic_qconfig``)."""


def linear_names(encoder: nn.Module) -> list[str]:
    """Names of the fp32 Linears of the BERT body (``nn.Linear``, possibly inside an ``InputScaled``)."""
    names = []
    for name, module in encoder.bert.named_modules():
        if type(module) is nn.Linear and not name.endswith(".inner"):
            names.append(name)
        elif isinstance(module, InputScaled) and type(module.inner) is nn.Linear:
            names.append(name)
    return names


def _is_ffn(name: str) -> bool:
    return name.endswith("intermediate.dense") or (name.endswith("output.dense") and ".attention." not in name)


def resolve_scope(encoder: nn.Module, scope: str, keep_fp32: Sequence[str] = ()) -> list[str]:
    """The Linear names ``scope`` selects (``all`` / ``ffn`` / ``attention`` / a regex), minus ``keep_fp32``.

    Raises:
        ValueError: an invalid regex, or a scope that selects nothing.
    """
    names = [n for n in linear_names(encoder) if n.startswith("encoder.")]
    if scope == "all":
        chosen = names
    elif scope == "ffn":
        chosen = [n for n in names if _is_ffn(n)]
    elif scope == "attention":
        chosen = [n for n in names if not _is_ffn(n)]
    else:
        try:
            pattern = re.compile(scope)
        except re.error as exc:
            raise ValueError(f"int8.scope={scope!r} is not 'all'/'ffn'/'attention' nor a regex: {exc}") from None
        chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        raise ValueError(f"int8.scope={scope!r} selects no Linear of the model")
    try:
        keep = [re.compile(k) for k in keep_fp32]
    except re.error as exc:
        raise ValueError(f"int8.keep_fp32: invalid regex: {exc}") from None
    return [n for n in chosen if not any(k.search(n) for k in keep)]


def _qconfig(scheme: QScheme):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    return per_channel_dynamic_qconfig if scheme == QScheme.PER_CHANNEL else default_dynamic_qconfig


@contextlib.contextmanager
def quantized_engine(engine: str | None) -> Iterator[None]:
    """Pack weights for ``engine`` inside the block (the global setting is restored afterwards).

    A packed int8 Linear keeps the kernels of the engine it was packed for, whatever the global setting later.

    Raises:
        ValueError: ``engine`` is not supported by this torch build.
    """
    if engine is None:
        yield
        return
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ValueError(f"int8 engine {engine!r} is not supported by this torch build (supported: {supported})")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def quantized_linear(
    linear: nn.Linear, scheme: QScheme | str = QScheme.PER_CHANNEL, engine: str | None = DEFAULT_ENGINE
) -> nn.Module:
    """A dynamic int8 copy of ``linear`` packed for ``engine`` (``linear`` itself is not changed)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    source = copy.copy(linear)
    source.qconfig = _qconfig(QScheme(scheme))
    with warnings.catch_warnings(), quantized_engine(engine):
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return DynamicLinear.from_float(source)


def quantize_linears_(
    encoder: nn.Module, names: Sequence[str], scheme: QScheme | str = QScheme.PER_CHANNEL,
    engine: str | None = DEFAULT_ENGINE,
) -> None:
    """Replace the named fp32 Linears of ``encoder.bert`` by dynamic int8 Linears, in place.

    A name may point at an ``InputScaled`` wrapper (a smoothed Linear): its inner Linear is quantized.

    Raises:
        ValueError: a name is not an fp32 Linear of ``encoder.bert`` (unknown or already quantized), or the
            engine is not supported here.
    """
    scheme = QScheme(scheme)
    modules = dict(encoder.bert.named_modules())
    for name in names:
        module = modules.get(name)
        target = module.inner if isinstance(module, InputScaled) else module
        if type(target) is not nn.Linear:
            raise ValueError(f"int8: {name!r} is not an fp32 nn.Linear of the model")
    for name in names:
        module = modules[name]
        if isinstance(module, InputScaled):
            module.inner = quantized_linear(module.inner, scheme, engine)
        else:
            parent_name, _, leaf = name.rpartition(".")
            parent = encoder.bert.get_submodule(parent_name) if parent_name else encoder.bert
            setattr(parent, leaf, quantized_linear(module, scheme, engine))


def quantized_names(encoder: nn.Module) -> list[str]:
    """Names (as in ``encoder.bert``, wrappers resolved) of the dynamic int8 Linears currently in the model."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    out = []
    for name, module in encoder.bert.named_modules():
        if isinstance(module, DynamicLinear):
            out.append(name.removesuffix(".inner"))
    return out


# ---------------------------------------------------------------------------------------------------- the search


@dataclass
class _ErrorAccumulator:
    """Σ‖ŷ − y‖² and Σ‖y‖² of one Linear's int8 output per candidate migration strength."""

    candidates: dict[float | None, tuple[nn.Module, torch.Tensor | None]]
    err: dict[float | None, float] = field(default_factory=dict)
    norm: float = 0.0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.norm += float(y.double().pow(2).sum())
        for alpha, (qlinear, inv_scale) in self.candidates.items():
            xq = x if inv_scale is None else x * inv_scale
            self.err[alpha] = self.err.get(alpha, 0.0) + float((qlinear(xq) - y).double().pow(2).sum())

    def relative(self, alpha: float | None) -> float:
        return self.err.get(alpha, 0.0) / max(self.norm, 1e-30)


def _input_absmax(encoder: nn.Module, names: Sequence[str], batches: Sequence[Any]) -> dict[str, torch.Tensor]:
    modules = dict(encoder.bert.named_modules())
    absmax: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0)
            absmax[name] = x if name not in absmax else torch.maximum(absmax[name], x)

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        _run(encoder, batches)
    finally:
        for handle in handles:
            handle.remove()
    return absmax


def _run(encoder: nn.Module, batches: Sequence[Any]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([encoder(b.input_ids, b.attention_mask).float() for b in batches])


def _measure_errors(
    encoder: nn.Module, names: Sequence[str], batches: Sequence[Any], absmax: dict[str, torch.Tensor],
    alphas: Sequence[float], scheme: QScheme, engine: str,
) -> dict[str, _ErrorAccumulator]:
    """Int8 output error of each Linear, unsmoothed and smoothed with each alpha, on its real fp32 inputs."""
    modules = dict(encoder.bert.named_modules())
    accumulators: dict[str, _ErrorAccumulator] = {}
    for name in names:
        linear = modules[name]
        candidates: dict[float | None, tuple[nn.Module, torch.Tensor | None]] = {
            None: (quantized_linear(linear, scheme, engine), None)}
        for alpha in alphas:
            k = smoothing_exponents(absmax[name], linear.weight, alpha)
            smoothed = copy.deepcopy(linear)
            with torch.no_grad():
                smoothed.weight.mul_(scale_of(k))
            candidates[alpha] = (quantized_linear(smoothed, scheme, engine), scale_of(-k))
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
    name: str, acc: _ErrorAccumulator, absmax: torch.Tensor, weight: torch.Tensor, min_error: float
) -> SmoothingChoice:
    """The alpha with the lowest measured error; none when the gain is small or not worth a runtime multiply."""
    plain = acc.relative(None)
    folded = name.endswith(ATTENTION_OUTPUT)
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


def _smooth_and_fold(
    fp32: nn.Module, names: list[str], context: TransformContext, batches: list[Any], config: Int8Config
) -> list[SmoothingChoice]:
    """Choose each Linear's smoothing by measured int8 output error; fold the V->O ones into ``fp32``.

    Activation ranges come from every calibration text; errors from the ``batches`` subset.
    """
    absmax = _input_absmax(fp32, names, context.calibration_batches())
    errors = _measure_errors(fp32, names, batches, absmax, _alphas(config), QScheme(config.qscheme), config.engine)
    modules = dict(fp32.bert.named_modules())
    choices = [_choose(n, errors[n], absmax[n], modules[n].weight, config.smooth_min_error) for n in names]
    for choice in choices:
        if choice.folded and choice.exponents is not None:
            value = modules[choice.name.replace(ATTENTION_OUTPUT, VALUE)]
            fold_value_output_scale_(value, modules[choice.name], choice.exponents)
    return choices


@dataclass
class _Candidate:
    """Builds and measures int8 models from the fp32 model for a given set of quantized Linears."""

    fp32: nn.Module
    config: Int8Config
    scales: dict[str, torch.Tensor]
    batches: list[Any]
    reference: torch.Tensor | None = None

    def record(self, quantized: Sequence[str]) -> dict[str, Any]:
        from icd.transforms.runtime import int8_runtime_record

        return int8_runtime_record(list(quantized), self.config.qscheme,
                                   {n: k for n, k in self.scales.items() if n in quantized}, engine=self.config.engine)

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


def prepare_int8_runtime(
    fp32: nn.Module, config: Int8Config, context: TransformContext | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose smoothing and fp32 exceptions for ``config``; fold the foldable part into ``fp32`` (in place).

    ``fp32`` stays an fp32 model computing the same function (only V→O scalings are folded into it); the int8
    model is ``apply_runtime_transforms_(copy.deepcopy(fp32), [record])``.

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
    kept = [{"name": n, "reason": "not in scope or matched keep_fp32"} for n in linear_names(fp32) if n not in names]
    batches = _search_batches(context, config.search_texts)
    report: dict[str, Any] = {"type": "int8", "qscheme": config.qscheme, "engine": config.engine,
                              "search_texts": sum(int(b.input_ids.shape[0]) for b in batches)}
    choices: list[SmoothingChoice] = []
    if batches and _alphas(config):
        choices = _smooth_and_fold(fp32, names, context, batches, config)
    elif not batches:
        report["note"] = "no calibration data: no smoothing search, no measured fp32 exceptions"
    report["smoothing"] = [c.to_dict() for c in choices]
    scales = {c.name: c.exponents for c in choices if c.exponents is not None and not c.folded}
    candidate = _Candidate(fp32, config, scales, batches)
    quantized = list(names)
    if batches:
        report["calibration_cos_mean_all_int8"] = candidate.calibration_cos(quantized)
        kept += _keep_most_sensitive(candidate, quantized, report)
    report["kept_fp32"] = kept
    report["quantized"] = len(quantized)
    return candidate.record(quantized), report


@register_transform(Int8Config)
def _int8_handler(encoder: nn.Module, config: Int8Config, context: TransformContext | None) -> dict[str, Any]:
    """``optimize_(encoder, Int8Config(...), ctx)``: search, then quantize ``encoder`` in place; returns the report."""
    from icd.transforms.runtime import apply_runtime_transforms_

    record, report = prepare_int8_runtime(encoder, config, context)
    apply_runtime_transforms_(encoder, [record])
    report["record"] = record
    return report
