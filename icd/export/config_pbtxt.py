"""Every ``config.pbtxt`` icd writes, built as Triton's own ``ModelConfig`` protobuf message.

Triton's ``inference.ModelConfig`` message ships in tritonclient (``tritonclient.grpc.model_config_pb2``). A config
is built field by field as that message (:func:`build_model_config`) and written with
``google.protobuf.text_format`` (:func:`config_text`, :func:`write_config`): one writer for the exported models
(:func:`render_config`) and the synthetic one (:mod:`icd.serve.synthetic_model`), so what we write is what Triton
parses. Tests parse every written config again (:func:`read_config`).

No ``optimization.execution_accelerators`` block is emitted: TensorRT / OpenVINO accelerators are honoured only by
the ONNX Runtime backend on a host that has them; icd's ONNX export runs as is on Triton's ``onnxruntime`` backend.
See docs/export.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError
from icd.io.atomic import write_text_atomic

INPUT_NAMES = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it (dims exclude the batch dim when batching)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class BatchingSpec:
    """The ``dynamic_batching`` block (``None`` where the model has none)."""

    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()
    preserve_ordering: bool = False
    priority_levels: int = 0


@dataclass(frozen=True)
class InstanceSpec:
    """One ``instance_group`` entry."""

    count: int
    kind: str = "KIND_CPU"
    gpus: tuple[int, ...] = ()


def io_specs(output_name: str, output_width: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (``input_ids``, ``attention_mask``: INT64 [-1]) and the one output (FP32 [width])."""
    inputs = [TensorSpec(name, "TYPE_INT64", (-1,)) for name in INPUT_NAMES]
    return inputs, [TensorSpec(output_name, "TYPE_FP32", (output_width,))]


def _messages():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def build_model_config(
    name: str,
    *,
    max_batch_size: int,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    instances: Sequence[InstanceSpec],
    backend: str | None = None,
    platform: str | None = None,
    default_model_filename: str | None = None,
    batching: BatchingSpec | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Any:
    """Triton's ``ModelConfig`` message with these fields.

    Raises:
        ValueError: a data type or instance kind Triton does not know, or neither backend nor platform.
    """
    pb = _messages()
    if not backend and not platform:
        raise ValueError(f"model config {name!r}: needs a backend or a platform")
    config = pb.ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend:
        config.backend = backend
    if platform:
        config.platform = platform
    if default_model_filename:
        config.default_model_filename = default_model_filename
    for target, specs in ((config.input, inputs), (config.output, outputs)):
        for spec in specs:
            entry = target.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type))
            entry.dims.extend(spec.dims)
    for spec in instances:
        group = config.instance_group.add(count=spec.count, kind=pb.ModelInstanceGroup.Kind.Value(spec.kind))
        group.gpus.extend(spec.gpus)
    if batching is not None:
        block = config.dynamic_batching
        block.max_queue_delay_microseconds = batching.max_queue_delay_us
        block.preferred_batch_size.extend(batching.preferred_batch_sizes)
        block.preserve_ordering = batching.preserve_ordering
        if batching.priority_levels:
            block.priority_levels = batching.priority_levels
            block.default_priority_level = batching.priority_levels
        if not batching.preferred_batch_sizes and not batching.max_queue_delay_us:
            block.SetInParent()
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def config_text(config: Any) -> str:
    """``config`` as protobuf text format (what ``config.pbtxt`` holds)."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def write_config(path: Path, config: Any) -> str:
    """Write ``config`` to ``path`` atomically (parsed back first); returns the text."""
    text = config_text(config)
    parse_config(text, source=str(path))
    write_text_atomic(Path(path), text)
    return text


def render_config(options, output_name: str, output_width: int, parameters: dict[str, str],
                  serving: Mapping[str, str] | None = None) -> str:
    """The ``config.pbtxt`` text of an exported model.

    Args:
        options: the :class:`icd.export.options.ExportOptions`.
        output_name: ``logits`` or ``embedding``.
        output_width: the output's width.
        parameters: ``parameters`` entries.
        serving: ``{"backend": ...}`` and / or ``{"platform": ..., "default_model_filename": ...}`` of the backend
            that serves the format (:meth:`icd.runtimes.base.Runtime.triton_serving`); None: the one
            ``options.platform`` names.
    """
    from icd.export.options import NATIVE_RUNTIME, Platform, Target

    if serving is None and options.platform == Platform.PYTHON:
        serving = {"backend": "python"}
    elif serving is None:
        from icd.runtimes.base import Precision
        from icd.runtimes.registry import get_runtime

        serving = get_runtime(NATIVE_RUNTIME[options.platform], check_installed=False).triton_serving(
            Precision.FP32, 1)[0]

    inputs, outputs = io_specs(output_name, output_width)
    gpu = options.target == Target.GPU
    batching = None
    if options.dynamic_batching:
        batching = BatchingSpec(options.max_queue_delay_us, tuple(options.preferred_batch_sizes),
                                options.preserve_ordering, options.priority_levels)
    config = build_model_config(
        options.model_name, max_batch_size=options.max_batch_size, inputs=inputs, outputs=outputs,
        instances=[InstanceSpec(options.instance_count, "KIND_GPU" if gpu else "KIND_CPU",
                                tuple(options.gpus) if gpu else ())],
        backend=serving.get("backend"), platform=serving.get("platform"),
        default_model_filename=serving.get("default_model_filename"), batching=batching, parameters=parameters,
    )
    text = config_text(config)
    parse_config(text, source=f"{options.model_name}/config.pbtxt")
    return text


def parse_config(text: str, source: str = "config.pbtxt"):
    """Parse ``text`` as Triton's ``inference.ModelConfig``.

    Returns:
        The ``ModelConfig`` message.

    Raises:
        ArtefactError: the text is not a valid ModelConfig (message names ``source`` and the protobuf error).
    """
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _messages().ModelConfig())
    except text_format.ParseError as exc:
        raise ArtefactError(f"{source}: not a valid Triton ModelConfig: {exc}") from None


def read_config(path: Path):
    """Parse the ``config.pbtxt`` at ``path`` (see :func:`parse_config`)."""
    if not Path(path).is_file():
        raise ArtefactError(f"no config.pbtxt at {path}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArtefactError(f"{path}: not a text protobuf (byte {exc.start} is not UTF-8); Triton reads "
                            "config.pbtxt as text") from None
    return parse_config(text, source=str(path))


def config_parameters(config: Any) -> dict[str, str]:
    """``{key: string_value}`` of a parsed ``ModelConfig``'s ``parameters``."""
    return {key: value.string_value for key, value in config.parameters.items()}
