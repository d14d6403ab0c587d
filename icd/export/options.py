"""What an export produces: one declaration of every option (the CLI flags map onto these fields)."""

from __future__ import annotations

import re
from enum import Enum

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_INSTANCE_COUNT = 1
DEFAULT_PREFERRED_BATCH_SIZES = (4, 8)
DEFAULT_MAX_QUEUE_DELAY_US = 2000
DEFAULT_PRIORITY_LEVELS = 0
DEFAULT_TRACE_SEQ_LEN = 16
DEFAULT_TRIM_PADDING = 8
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Target(str, Enum):
    """Where the exported model runs."""

    CPU = "cpu"
    """``instance_group { kind: KIND_CPU }`` — the python backend runs model.pt with torch on CPU."""
    GPU = "gpu"
    """``instance_group { kind: KIND_GPU gpus: [...] }`` — model.pt is moved to ``cuda:<device id>``."""


class Platform(str, Enum):
    """Which Triton backend serves the exported artefact."""

    PYTHON = "python"
    """``backend: "python"`` + ``1/model.py`` (checksums, ICD metrics, correlation cache, thread budget): runs the
    artefact of any runtime with torch / ONNX Runtime / OpenVINO in the stub's Python. Runs on the embedded
    tritonserver here and in any NGC container whose Python has the runtime (``-pyt-python-py3`` for torch)."""
    PYTORCH_LIBTORCH = "pytorch_libtorch"
    """``platform: "pytorch_libtorch"`` — Triton's libtorch backend loads model.pt (runtime torchscript; NGC
    container only: the embedded binary has no such backend). No checksum check, ICD metrics or cache."""
    ONNXRUNTIME_ONNX = "onnxruntime_onnx"
    """``platform: "onnxruntime_onnx"`` — Triton's onnxruntime backend loads model.onnx (runtime onnx; NGC
    container only). No checksum check, ICD metrics or cache."""
    OPENVINO = "openvino"
    """``backend: "openvino"`` — Triton's OpenVINO backend loads model.xml (runtime openvino; NGC container
    only). No checksum check, ICD metrics or cache."""


NATIVE_RUNTIME = {Platform.PYTORCH_LIBTORCH: "torchscript", Platform.ONNXRUNTIME_ONNX: "onnx",
                  Platform.OPENVINO: "openvino"}
"""The runtime whose artefact each native Triton backend loads."""


class ExportOptions(BaseModel):
    """Settings of one exported model.

    Attributes:
        model_name: folder and Triton model name (``bert_icd``).
        version: version folder.
        baseline: export the unoptimized model rebuilt from ``config.lock.json`` instead of the run's model.
        target: cpu or gpu instances.
        platform: python backend (default) or pytorch_libtorch.
        max_batch_size: Triton ``max_batch_size`` (0 disables batching).
        instance_count: instances per device.
        gpus: GPU ids for ``--target gpu``.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size`` (not given: those of
            :data:`DEFAULT_PREFERRED_BATCH_SIZES` up to ``max_batch_size``).
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        preserve_ordering: ``dynamic_batching.preserve_ordering``.
        priority_levels: ``dynamic_batching.priority_levels`` (0 = no priorities).
        dynamic_batching: emit the ``dynamic_batching`` block at all.
        runtime: ``torchscript`` | ``onnx`` | ``openvino`` (None: the run's ``icd profile`` choice, else
            torchscript).
        precision: ``fp32`` | ``bf16`` | ``int8`` (None: the profile's choice, else the run's own: int8 when the
            run has icd's int8).
        threads: threads per instance (0 = the thread budget: cores / instances served; also ``torch_threads``).
        int8_recipe: OpenVINO int8 only: a recipe of :data:`icd.runtimes.openvino_int8.RECIPES` (None: the
            default, ``icd_outliers_fused_fp32``; ``icd_outliers_fused`` also quantizes the fused attention's query and
            key, docs/int8.md).
        trace_seq_len: sequence length of the example input used to trace (the trace is shape-generic).
        trim_padding: python backend: run each batch without its trailing padding, rounded up to a multiple of
            this many tokens (``icd_trim_padding``; 0 = run the length clients send; docs/serving.md). None:
            :data:`DEFAULT_TRIM_PADDING`, whatever the runtime and precision.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = "bert_icd"
    version: int = Field(1, ge=1)
    baseline: bool = False
    target: Target = Target.CPU
    platform: Platform = Platform.PYTHON
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=0)
    instance_count: int = Field(DEFAULT_INSTANCE_COUNT, ge=1)
    gpus: tuple[int, ...] = (0,)
    preferred_batch_sizes: tuple[int, ...] = DEFAULT_PREFERRED_BATCH_SIZES
    max_queue_delay_us: int = Field(DEFAULT_MAX_QUEUE_DELAY_US, ge=0)
    preserve_ordering: bool = False
    priority_levels: int = Field(DEFAULT_PRIORITY_LEVELS, ge=0)
    dynamic_batching: bool = True
    runtime: str | None = None
    precision: str | None = None
    threads: int = Field(0, ge=0, validation_alias=AliasChoices("threads", "torch_threads"))
    trace_seq_len: int = Field(DEFAULT_TRACE_SEQ_LEN, ge=2, le=512)
    int8_recipe: str | None = None
    trim_padding: int | None = Field(None, ge=0)

    @field_validator("model_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError(f"model name {value!r} must be letters, digits, '_', '-', '.' (no '/')")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(gpu < 0 for gpu in value):
            raise ValueError(f"gpus {list(value)}: expected one or more GPU ids >= 0")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str | None) -> str | None:
        from icd.runtimes.base import Precision

        if value is not None and value not in {p.value for p in Precision}:
            raise ValueError(f"precision {value!r} must be one of {[p.value for p in Precision]}")
        return value

    @field_validator("int8_recipe")
    @classmethod
    def _int8_recipe(cls, value: str | None) -> str | None:
        from icd.runtimes.openvino_int8 import recipe_problem

        problem = None if value is None else recipe_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _recipe_variant(self) -> ExportOptions:
        if self.int8_recipe is None:
            return self
        if self.runtime not in (None, "openvino") or self.precision not in (None, "int8"):
            raise ValueError(f"int8_recipe {self.int8_recipe} is for runtime openvino, precision int8; got runtime "
                             f"{self.runtime or '(profile choice)'}, precision {self.precision or '(profile choice)'}")
        return self

    @model_validator(mode="after")
    def _platform_runtime(self) -> ExportOptions:
        native = NATIVE_RUNTIME.get(self.platform)
        if native and self.runtime is None:
            object.__setattr__(self, "runtime", native)
        elif native and self.runtime != native:
            raise ValueError(f"platform {self.platform.value} serves runtime {native}, not {self.runtime}")
        return self

    @model_validator(mode="after")
    def _batching(self) -> ExportOptions:
        if self.max_batch_size == 0 and self.dynamic_batching:
            object.__setattr__(self, "dynamic_batching", False)
        if "preferred_batch_sizes" not in self.model_fields_set:  # the defaults fit whatever max_batch_size is given
            object.__setattr__(self, "preferred_batch_sizes", tuple(
                b for b in DEFAULT_PREFERRED_BATCH_SIZES if b <= self.max_batch_size))
        too_big = [b for b in self.preferred_batch_sizes if b < 1 or b > max(self.max_batch_size, 1)]
        if self.dynamic_batching and too_big:
            raise ValueError(
                f"preferred_batch_sizes {list(too_big)} must lie in 1..max_batch_size ({self.max_batch_size})"
            )
        if self.preserve_ordering and self.priority_levels > 1:
            raise ValueError(
                f"priority_levels {self.priority_levels} with preserve_ordering: Triton allows one priority level "
                "when preserve_ordering is true"
            )
        return self
