"""The runtime registry: ``torchscript``, ``onnx``, ``openvino``; :func:`register_runtime` adds more."""

from __future__ import annotations

import importlib

from icd.errors import UserError
from icd.runtimes.base import Runtime, Variant

_RUNTIMES: dict[str, Runtime] = {}
_BUILTIN = {
    "torchscript": "icd.runtimes.torchscript",
    "onnx": "icd.runtimes.onnxruntime",
    "openvino": "icd.runtimes.openvino",
}
DEFAULT_RUNTIME = "torchscript"


def register_runtime(runtime: Runtime) -> Runtime:
    """Add ``runtime`` under ``runtime.name`` (replacing one of that name)."""
    if not runtime.name:
        raise ValueError(f"{type(runtime).__name__}: a runtime needs a name")
    _RUNTIMES[runtime.name] = runtime
    return runtime


def unregister_runtime(name: str) -> None:
    """Remove the runtime called ``name`` (no error if absent)."""
    _RUNTIMES.pop(name, None)


def runtime_names() -> list[str]:
    """Every registered runtime name (built-ins first)."""
    return list(dict.fromkeys([*_BUILTIN, *_RUNTIMES]))


def get_runtime(name: str, check_installed: bool = True) -> Runtime:
    """The runtime called ``name``.

    Raises:
        UserError: unknown name (the message lists the known ones) or its package is not installed.
    """
    if name not in _RUNTIMES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _RUNTIMES:
        raise UserError(f"unknown runtime {name!r}; known: {', '.join(runtime_names())}")
    runtime = _RUNTIMES[name]
    if check_installed:
        runtime.check_installed()
    return runtime


def all_variants() -> list[Variant]:
    """Every runtime × precision the registered runtimes offer."""
    return [Variant(name, precision) for name in runtime_names()
            for precision in get_runtime(name, check_installed=False).precisions]
