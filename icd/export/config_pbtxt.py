"""Render a model's ``config.pbtxt`` from :class:`ExportOptions`, and validate it with Triton's own protobuf.

Triton's ``ModelConfig`` message ships in tritonclient (``tritonclient.grpc.model_config_pb2``); every config we
write is parsed with ``google.protobuf.text_format`` before it is written, and tests parse it again.

No ``optimization.execution_accelerators`` block is emitted: Triton honours ``gpu_execution_accelerator``
(TensorRT) only for the ONNX Runtime and TensorFlow backends, and icd exports TorchScript (python backend or
``pytorch_libtorch``), for which such a block is ignored or rejected. See docs/export.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from icd.errors import ArtefactError
from icd.export.options import ExportOptions, Platform, Target

INPUT_NAMES = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as Triton sees it (dims exclude the batch dim when batching)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def io_specs(output_name: str, output_width: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (``input_ids``, ``attention_mask``: INT64 [-1]) and the one output (FP32 [width])."""
    inputs = [TensorSpec(name, "TYPE_INT64", (-1,)) for name in INPUT_NAMES]
    return inputs, [TensorSpec(output_name, "TYPE_FP32", (output_width,))]


def _tensor_block(kind: str, specs: list[TensorSpec]) -> str:
    rows = [
        f'  {{\n    name: "{s.name}"\n    data_type: {s.data_type}\n    dims: [ {", ".join(map(str, s.dims))} ]\n  }}'
        for s in specs
    ]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _instance_block(options: ExportOptions) -> str:
    if options.target == Target.GPU:
        gpus = ", ".join(str(g) for g in options.gpus)
        return f"instance_group [\n  {{\n    count: {options.instance_count}\n    kind: KIND_GPU\n    gpus: [ {gpus} ]\n  }}\n]\n"
    return f"instance_group [\n  {{\n    count: {options.instance_count}\n    kind: KIND_CPU\n  }}\n]\n"


def _batching_block(options: ExportOptions) -> str:
    if not options.dynamic_batching:
        return ""
    lines = ["dynamic_batching {"]
    if options.preferred_batch_sizes:
        lines.append(f"  preferred_batch_size: [ {', '.join(map(str, options.preferred_batch_sizes))} ]")
    lines.append(f"  max_queue_delay_microseconds: {options.max_queue_delay_us}")
    lines.append(f"  preserve_ordering: {'true' if options.preserve_ordering else 'false'}")
    if options.priority_levels:
        lines.append(f"  priority_levels: {options.priority_levels}")
        lines.append(f"  default_priority_level: {options.priority_levels}")
    return "\n".join(lines) + "\n}\n"


def _parameters_block(params: dict[str, str]) -> str:
    return "".join(
        f'parameters {{\n  key: "{key}"\n  value {{ string_value: "{value}" }}\n}}\n' for key, value in params.items()
    )


def render_config(options: ExportOptions, output_name: str, output_width: int, parameters: dict[str, str]) -> str:
    """The ``config.pbtxt`` text (validated by :func:`parse_config` before it is returned)."""
    inputs, outputs = io_specs(output_name, output_width)
    head = f'name: "{options.model_name}"\n'
    if options.platform == Platform.PYTORCH_LIBTORCH:
        head += 'platform: "pytorch_libtorch"\ndefault_model_filename: "model.pt"\n'
    else:
        head += 'backend: "python"\n'
    text = (
        head
        + f"max_batch_size: {options.max_batch_size}\n"
        + _tensor_block("input", inputs)
        + _tensor_block("output", outputs)
        + _instance_block(options)
        + _batching_block(options)
        + _parameters_block(parameters)
    )
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
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ArtefactError(f"{source}: not a valid Triton ModelConfig: {exc}") from None


def read_config(path: Path):
    """Parse the ``config.pbtxt`` at ``path`` (see :func:`parse_config`)."""
    if not Path(path).is_file():
        raise ArtefactError(f"no config.pbtxt at {path}")
    return parse_config(Path(path).read_text(), source=str(path))
