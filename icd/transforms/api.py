"""``optimize_(encoder, config)``: apply one transform in place, torchao style.

A transform is a config class (pydantic, in :mod:`icd.transforms.configs`) plus a handler registered for that
class with :func:`register_transform`. Data-aware methods (Wanda, SparseGPT, SmoothQuant) read calibration data
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
from typing import Any, TypeVar

from pydantic import BaseModel
from torch import nn

from icd.measure.encode import Batch, tokenize

ConfigT = TypeVar("ConfigT", bound=BaseModel)
Handler = Callable[[nn.Module, Any, "TransformContext | None"], Any]

_HANDLERS: dict[type[BaseModel], Handler] = {}

# Modules whose import registers a handler; imported lazily by optimize_ (no work at import time).
_BUILTIN_HANDLER_MODULES = ("icd.transforms.nm_sparsity", "icd.transforms.int8")


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


def register_transform(config_type: type[ConfigT]) -> Callable[[Handler], Handler]:
    """Decorator: register ``handler(encoder, config, context) -> result`` for configs of ``config_type``."""

    def decorate(handler: Handler) -> Handler:
        _HANDLERS[config_type] = handler
        return handler

    return decorate


def registered_names() -> list[str]:
    """The ``type`` tags of every registered config class, sorted."""
    return sorted(_type_tag(t) for t in _HANDLERS)


def _load_builtin_handlers() -> None:
    for module_name in _BUILTIN_HANDLER_MODULES:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name)


def _handler_for(config: object) -> Handler:
    _load_builtin_handlers()
    for config_type in type(config).__mro__:
        if config_type in _HANDLERS:
            return _HANDLERS[config_type]
    raise TypeError(
        f"optimize_: no transform registered for {type(config).__name__}; registered: {registered_names()}"
    )


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
