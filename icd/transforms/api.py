"""``optimize_(encoder, config)``: apply one transform in place, torchao style.

A transform is a config class (pydantic, in :mod:`icd.transforms.configs`) plus a handler registered for that
class with :func:`register_transform`, which also says its :class:`TransformKind`: a *weight* transform changes the
fp32 weights (saved in ``model.safetensors``); a *runtime* transform is prepared on the fp32 model (what can be
folded is folded) and leaves a record replayed at load (``prepare``: ``(fp32, config, context) -> (record,
report)``), which runtimes other than torch read as decisions (docs/runtimes.md). Data-aware methods (Wanda, SparseGPT, SmoothQuant) read calibration data
from a :class:`TransformContext`; what each handler returns (per-layer information) is collected there too,
together with the :class:`TransformRecord` that says how the model was made.

Example:
    >>> from icd.transforms.api import optimize_, TransformContext
    >>> from icd.transforms.configs import NMSparsityConfig
    >>> ctx = TransformContext(tokenizer=tok, calibration_texts=texts)      # doctest: +SKIP
    >>> optimize_(encoder, NMSparsityConfig(n=2, m=4, scope="all", method="sparsegpt"), ctx)  # doctest: +SKIP
    >>> ctx.applied[-1].record.to_dict()                                   # doctest: +SKIP
    {'type': 'nm_sparsity', 'version': 1, 'data': {'n': 2, 'm': 4, 'scope': 'all', ...}}
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel
from torch import nn

from icd.measure.encode import Batch, tokenize

ConfigT = TypeVar("ConfigT", bound=BaseModel)
Handler = Callable[[nn.Module, Any, "TransformContext | None"], Any]

Prepare = Callable[[nn.Module, Any, "TransformContext | None"], "tuple[dict[str, Any], dict[str, Any]]"]


class TransformKind(str, Enum):
    """How a transform reaches the served model."""

    WEIGHT = "weight"
    """Changes the fp32 weights in place (permutations, N:M sparsity, compaction): saved in model.safetensors."""
    RUNTIME = "runtime"
    """Cannot live in fp32 weights (int8): prepared on the fp32 model, its record replayed at load."""


_HANDLERS: dict[type[BaseModel], Handler] = {}
_KINDS: dict[type[BaseModel], TransformKind] = {}
_PREPARE: dict[type[BaseModel], Prepare] = {}

# Modules whose import registers a handler; imported lazily by optimize_ (no work at import time).
_BUILTIN_HANDLER_MODULES = ("icd.transforms.nm_sparsity", "icd.transforms.int8", "icd.transforms.compact")


@dataclass(frozen=True)
class TransformRecord:
    """Provenance of one applied transform: ``{"type", "version", "data"}`` (JSON-ready)."""

    type: str
    version: int
    data: dict[str, Any]

    @classmethod
    def from_config(cls, config: BaseModel) -> TransformRecord:
        """The record of ``config`` (its ``type`` tag, ``version`` and remaining fields)."""
        dumped = config.model_dump(mode="json")
        type_tag = dumped.pop("type", type(config).__name__)
        version = int(dumped.pop("version", 1))
        return cls(type=type_tag, version=version, data=dumped)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "version": self.version, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TransformRecord:
        """Parse ``{"type", "version", "data"}``; raises ValueError naming a missing key."""
        for key in ("type", "version", "data"):
            if key not in obj:
                raise ValueError(f"transform record: missing key {key!r} in {sorted(obj)}")
        return cls(type=str(obj["type"]), version=int(obj["version"]), data=dict(obj["data"]))

    def to_config(self) -> BaseModel:
        """Rebuild the config object (its class must be registered)."""
        _load_builtin_handlers()
        for config_type in _HANDLERS:
            if _type_tag(config_type) == self.type:
                return config_type(**self.data, version=self.version)
        raise TypeError(f"transform record: unknown type {self.type!r}; registered: {registered_names()}")


@dataclass
class AppliedTransform:
    """One call of :func:`optimize_`: its provenance and what the handler returned (per-layer info)."""

    record: TransformRecord
    result: Any


@dataclass
class TransformContext:
    """Calibration data for data-aware transforms, and the log of applied transforms.

    Attributes:
        tokenizer: tokenizer used to turn ``calibration_texts`` into batches.
        calibration_texts: calibration (never held-out) texts.
        batch_size: texts per calibration batch.
        max_length: token limit per text.
        batches: pre-tokenized calibration batches; built from the texts on first use when None.
        stats: a ``CalibrationStats`` of the model (per-Linear Gram etc.) for methods that can use them
            instead of running the model.
        applied: filled by :func:`optimize_`, in order.
    """

    tokenizer: Any = None
    calibration_texts: Sequence[str] = ()
    batch_size: int = 16
    max_length: int = 128
    batches: list[Batch] | None = None
    stats: Any = None
    applied: list[AppliedTransform] = field(default_factory=list)

    def calibration_batches(self) -> list[Batch]:
        """Tokenized calibration batches (cached); ValueError when neither batches nor texts+tokenizer exist."""
        if self.batches is None:
            if self.tokenizer is None or not self.calibration_texts:
                raise ValueError("TransformContext: calibration needs batches, or a tokenizer and calibration_texts")
            self.batches = tokenize(self.tokenizer, list(self.calibration_texts), self.batch_size, self.max_length)
        return self.batches

    @property
    def has_calibration_data(self) -> bool:
        return self.batches is not None or (self.tokenizer is not None and bool(self.calibration_texts))


def _type_tag(config_type: type[BaseModel]) -> str:
    type_field = config_type.model_fields.get("type")
    if type_field is not None and isinstance(type_field.default, str):
        return type_field.default
    return config_type.__name__


def register_transform(config_type: type[ConfigT], kind: TransformKind = TransformKind.WEIGHT,
                       prepare: Prepare | None = None) -> Callable[[Handler], Handler]:
    """Decorator: register ``handler(encoder, config, context) -> result`` for configs of ``config_type``.

    Args:
        config_type: the config class.
        kind: weight or runtime transform.
        prepare: runtime transforms: ``(fp32, config, context) -> (record, report)``.

    Raises:
        ValueError: a runtime transform without ``prepare``.
    """
    if kind == TransformKind.RUNTIME and prepare is None:
        raise ValueError(f"register_transform({config_type.__name__}): a runtime transform needs prepare=")

    def decorate(handler: Handler) -> Handler:
        _HANDLERS[config_type] = handler
        _KINDS[config_type] = TransformKind(kind)
        if prepare is not None:
            _PREPARE[config_type] = prepare
        return handler

    return decorate


def _registered_type(config: object) -> type[BaseModel]:
    _load_builtin_handlers()
    for config_type in type(config).__mro__:
        if config_type in _HANDLERS:
            return config_type
    raise TypeError(
        f"optimize_: no transform registered for {type(config).__name__}; registered: {registered_names()}"
    )


def transform_kind(config: BaseModel) -> TransformKind:
    """Whether ``config`` is a weight or a runtime transform (TypeError if unregistered)."""
    return _KINDS[_registered_type(config)]


def prepare_runtime_transform(
    fp32: nn.Module, config: BaseModel, context: TransformContext | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prepare the runtime transform ``config`` on ``fp32`` (foldable parts folded in place).

    Returns:
        ``(record, report)``: the record replayed at load and a JSON-ready report.

    Raises:
        TypeError: ``config`` is not a registered runtime transform.
    """
    config_type = _registered_type(config)
    if config_type not in _PREPARE:
        raise TypeError(f"{type(config).__name__} is a {_KINDS[config_type].value} transform, not a runtime one")
    return _PREPARE[config_type](fp32, config, context)


def registered_names() -> list[str]:
    """The ``type`` tags of every registered config class, sorted."""
    return sorted(_type_tag(t) for t in _HANDLERS)


def _load_builtin_handlers() -> None:
    for module_name in _BUILTIN_HANDLER_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name)


def _handler_for(config: object) -> Handler:
    return _HANDLERS[_registered_type(config)]


def optimize_(encoder: nn.Module, config: BaseModel, context: TransformContext | None = None) -> None:
    """Apply the transform ``config`` describes to ``encoder``, in place.

    Args:
        encoder: an :class:`icd.model.encoder.Encoder` (or any module the handler accepts).
        config: a registered config object, e.g. ``NMSparsityConfig(n=2, m=4)``.
        context: calibration data for data-aware methods; receives an :class:`AppliedTransform` entry.

    Raises:
        TypeError: no handler is registered for ``type(config)`` (the message lists the registered ones).
    """
    handler = _handler_for(config)
    result = handler(encoder, config, context)
    if context is not None:
        context.applied.append(AppliedTransform(record=TransformRecord.from_config(config), result=result))
