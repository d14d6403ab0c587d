"""A candidate applied to a model's configuration, as Triton's own ``ModelConfig`` protobuf message.

The base configuration is what the server runs (``GET /v2/models/<m>/config``, JSON) or, when ``icd tune``
starts its own server, the repository's ``config.pbtxt``. Both become a ``ModelConfig`` message
(``tritonclient.grpc.model_config_pb2``); a candidate replaces the instance group, ``max_batch_size``, the dynamic
batching fields and the threads parameter, and the result goes to Triton as JSON (reload) or to disk as
``config.pbtxt`` through icd's one config writer (:func:`icd.export.config_pbtxt.write_config`: ``text_format``,
parsed back before it is written).

Instance kind: ``KIND_GPU`` is kept only where the server ran the model on a GPU or this host has one; on a
CPU-only host a ``KIND_GPU`` base becomes ``KIND_CPU`` (Triton Model Analyzer wrote ``KIND_GPU`` configs there that
did not load: triton-inference-server/model_analyzer#927).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icd.errors import ArtefactError
from icd.tune.space import Candidate
from icd.tune.variants import Variant, apply_variant

THREADS_PARAMETER = "icd_threads"
"""``parameters`` key icd's python backend reads as threads per instance (0 = the server's thread budget)."""
LEGACY_THREADS_PARAMETER = "icd_torch_threads"
"""What older exports called it (read when ``icd_threads`` is absent; a candidate removes it)."""
KIND_CPU = "KIND_CPU"
KIND_GPU = "KIND_GPU"
_NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def host_has_gpu() -> bool:
    """Whether the NVIDIA driver lists a GPU on this host."""
    return _NVIDIA_GPUS.is_dir() and any(_NVIDIA_GPUS.iterdir())


def _pb2():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def from_json(doc: dict[str, Any], source: str):
    """Triton's JSON model configuration as a ``ModelConfig`` message.

    Raises:
        ArtefactError: not a model configuration (names ``source``).
    """
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(doc, _pb2().ModelConfig(), ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise ArtefactError(f"{source}: not a Triton model configuration ({exc})") from None


def from_pbtxt(path: Path):
    """The ``config.pbtxt`` at ``path`` as a ``ModelConfig`` message (ArtefactError when invalid)."""
    from icd.export.config_pbtxt import read_config

    return read_config(path)


def to_json(config) -> dict[str, Any]:
    """The message as the JSON Triton's repository API takes (``parameters.config`` of a load request)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def to_pbtxt(config) -> str:
    """``config.pbtxt`` text of the message (icd's one writer, :mod:`icd.export.config_pbtxt`)."""
    from icd.export.config_pbtxt import config_text

    return config_text(config)


def write_pbtxt(config, path: Path) -> Path:
    """Write the message as ``config.pbtxt`` at ``path`` (parsed back first; atomically: a complete file or none)."""
    from icd.export.config_pbtxt import write_config

    write_config(Path(path), config)
    return Path(path)


def base_kind(config) -> str:
    """The instance kind of the base configuration (``KIND_CPU`` when it has no instance group)."""
    pb2 = _pb2()
    groups = list(config.instance_group)
    if not groups:
        return KIND_CPU
    return pb2.ModelInstanceGroup.Kind.Name(groups[0].kind)


def resolve_kind(config, server_ran_it: bool) -> tuple[str, str]:
    """The kind to tune with, and a note when it differs from the base's.

    Args:
        config: the base configuration.
        server_ran_it: the base was read from a server that had loaded the model (its kind works there).
    """
    kind = base_kind(config)
    if kind == KIND_GPU and not server_ran_it and not host_has_gpu():
        return KIND_CPU, ("the repository's config.pbtxt asks for KIND_GPU but this host has no GPU: measured and "
                          "written as KIND_CPU")
    if kind not in (KIND_CPU, KIND_GPU):  # KIND_AUTO / KIND_MODEL: say what runs
        return (KIND_GPU if host_has_gpu() else KIND_CPU), f"{kind} resolved for this host"
    return kind, ""


def apply_candidate(base, candidate: Candidate, kind: str, variants: Mapping[int, Variant] | None = None):
    """A copy of ``base`` with ``candidate``'s instance group, batching, threads and version (other fields kept).

    Raises:
        KeyError: ``candidate.version`` is not in ``variants``.
    """
    pb2 = _pb2()
    config = copy.deepcopy(base)
    gpus = list(base.instance_group[0].gpus) if base.instance_group and kind == KIND_GPU else []
    del config.instance_group[:]
    group = config.instance_group.add()
    group.count = candidate.instance_count
    group.kind = pb2.ModelInstanceGroup.Kind.Value(kind)
    group.gpus.extend(gpus)
    config.max_batch_size = candidate.max_batch_size
    batching = config.dynamic_batching
    del batching.preferred_batch_size[:]
    batching.preferred_batch_size.extend(candidate.preferred_batch_sizes)
    batching.max_queue_delay_microseconds = candidate.queue_delay_us
    config.parameters[THREADS_PARAMETER].string_value = str(candidate.threads)
    if LEGACY_THREADS_PARAMETER in config.parameters:
        del config.parameters[LEGACY_THREADS_PARAMETER]
    if candidate.version is not None:
        apply_variant(config, (variants or {})[candidate.version])
    return config


def candidate_of(config) -> Candidate:
    """The candidate a configuration corresponds to (the default configuration's place in a comparison)."""
    count = sum(g.count or 1 for g in config.instance_group) or 1
    threads = next((config.parameters[k].string_value for k in (THREADS_PARAMETER, LEGACY_THREADS_PARAMETER)
                    if k in config.parameters), "0")
    batching = config.dynamic_batching
    max_batch = max(config.max_batch_size, 1)
    if max_batch == 1:
        return Candidate(count, int(threads or 0), 1)
    return Candidate(count, int(threads or 0), max_batch, tuple(sorted(batching.preferred_batch_size)),
                     int(batching.max_queue_delay_microseconds))
