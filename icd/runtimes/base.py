"""The runtime interface: precisions, variants, in-process sessions and what a runtime must provide."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from icd.runtimes.source import ModelSource

RUNTIME_FILE = "icd_runtime.json"
"""Sidecar in a version folder: ``{"runtime", "precision", "files", "properties", "recipe"}`` — how to load it."""


class Precision(str, Enum):
    """The numeric precision a variant computes in."""

    FP32 = "fp32"
    """float32 everywhere (OpenVINO: ``INFERENCE_PRECISION_HINT`` f32, not the CPU plugin's bf16 default)."""
    BF16 = "bf16"
    """OpenVINO only: the CPU plugin's bfloat16 inference precision (its default on CPUs with AVX512-BF16 / AMX)."""
    INT8 = "int8"
    """int8 weights and activations, from icd's int8 decisions (torch: the run's own int8 Linears; ONNX Runtime:
    dynamic int8 MatMuls; OpenVINO: NNCF with icd's recipe, docs/int8.md)."""


@dataclass(frozen=True, order=True)
class Variant:
    """One runtime at one precision, named ``runtime:precision`` (``openvino:int8``)."""

    runtime: str
    precision: Precision

    @property
    def name(self) -> str:
        return f"{self.runtime}:{self.precision.value}"

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"openvino:int8"`` → Variant; raises ValueError naming the text."""
        runtime, sep, precision = str(text).partition(":")
        try:
            return cls(runtime, Precision(precision))
        except ValueError:
            raise ValueError(f"variant {text!r}: expected runtime:precision with precision one of "
                             f"{[p.value for p in Precision]}") from None


class Session:
    """An exported artefact loaded in this process: ``session(input_ids, attention_mask) -> output``.

    Accepts torch tensors or numpy arrays (int64, ``[batch, seq]``) and returns a float32 torch tensor, so the
    in-process harnesses (:func:`icd.measure.encode.encode`, :func:`icd.measure.latency.measure_latency_interleaved`)
    run it like an ``Encoder``.
    """

    def __init__(self, variant: Variant, run: Any, description: str) -> None:
        self.variant = variant
        self._run = run
        self.description = description

    def numpy(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Outputs for numpy inputs, as float32 numpy."""
        return np.asarray(self._run(np.ascontiguousarray(ids, dtype=np.int64),
                                    np.ascontiguousarray(mask, dtype=np.int64)), dtype=np.float32)

    def __call__(self, ids: Any, mask: Any) -> torch.Tensor:
        as_np = [x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in (ids, mask)]
        return torch.from_numpy(self.numpy(*as_np))


@dataclass(frozen=True)
class ExportedArtefact:
    """What :meth:`Runtime.export` wrote into a version folder."""

    variant: Variant
    files: tuple[str, ...]
    properties: Mapping[str, str]
    recipe: Mapping[str, Any]

    def sidecar(self) -> dict[str, Any]:
        """The :data:`RUNTIME_FILE` document."""
        return {"runtime": self.variant.runtime, "precision": self.variant.precision.value,
                "files": list(self.files), "properties": dict(self.properties), "recipe": dict(self.recipe)}


class Runtime(ABC):
    """One runtime: export an artefact, load it in process, and say how Triton serves it.

    Attributes:
        name: registry name (``--runtime``).
        package: the Python package it needs (checked by :meth:`check_installed`).
        precisions: the precisions it can export.
    """

    name: str = ""
    package: str = ""
    precisions: tuple[Precision, ...] = (Precision.FP32,)

    def check_installed(self) -> None:
        """Raise :class:`icd.errors.UserError` (one line) when the runtime's package cannot be imported."""
        import importlib.util

        from icd.errors import UserError

        if self.package and importlib.util.find_spec(self.package) is None:
            raise UserError(f"runtime {self.name!r} needs the Python package {self.package!r}, which is not "
                            "installed (make setup installs it)")

    def check_precision(self, precision: Precision) -> None:
        from icd.errors import UserError

        if precision not in self.precisions:
            raise UserError(f"runtime {self.name!r} has no precision {precision.value!r}; it has "
                            f"{[p.value for p in self.precisions]}")

    @abstractmethod
    def export(self, source: ModelSource, folder: Path, precision: Precision, *, output_gather: bool,
               threads: int) -> ExportedArtefact:
        """Write the artefact for ``precision`` into ``folder``.

        Args:
            source: the run's model.
            folder: the (temporary) version folder.
            precision: what to export.
            output_gather: keep an embedding model's output gather in the graph (native Triton backends);
                False when the python backend applies it.
            threads: threads per instance recorded for native backends.

        Writes the artefact's files and its :data:`RUNTIME_FILE`.
        """

    @abstractmethod
    def load(self, folder: Path, threads: int) -> Session:
        """Load the artefact in ``folder`` (as its :data:`RUNTIME_FILE` says) with ``threads`` threads."""

    @abstractmethod
    def triton_serving(self, precision: Precision, threads: int) -> tuple[dict[str, str], dict[str, str]]:
        """``({"platform"/"backend"/"default_model_filename": ...}, backend parameters)`` of Triton's standard
        backend for this format (NGC container), with ``threads`` threads per instance."""
