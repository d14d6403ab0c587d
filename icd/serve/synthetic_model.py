"""A *synthetic* Triton model for load, alert and canary fault tests: ``echo_delay``.

It is not a neural network. It takes the same inputs as the exported BERT models (``input_ids``,
``attention_mask``: INT64, dims [-1]) and returns ``logits`` (FP32, [num_labels]) computed from the token ids
(so a client can check it got *its* answer), after sleeping ``icd_delay_ms`` per batch Triton forms, and fails
each request with probability ``icd_error_rate``. Both are ``parameters`` in ``config.pbtxt``: to change them,
rewrite the model with :func:`write_echo_delay_model` and reload it (explicit model control).

Numbers measured against it are measurements of this synthetic model, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from icd.io.atomic import write_text_atomic

SYNTHETIC_MODEL_NAME = "echo_delay"

_MODEL_PY = '''"""Synthetic python-backend model written by icd.serve.synthetic_model (NOT a neural network)."""
import json
import random
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.delay_s = float(params.get("icd_delay_ms", "0")) / 1000.0
        self.error_rate = float(params.get("icd_error_rate", "0"))
        self.num_labels = int(params.get("icd_num_labels", "2"))
        if self.delay_s < 0 or not 0.0 <= self.error_rate <= 1.0:
            raise pb_utils.TritonModelException(
                f"echo_delay: icd_delay_ms must be >= 0 and icd_error_rate in [0, 1], got "
                f"{self.delay_s * 1000} and {self.error_rate}")
        self.rng = random.Random(int(params.get("icd_seed", "0")) + int(args["model_instance_device_id"] or 0))

    def execute(self, requests):
        if self.delay_s:
            time.sleep(self.delay_s)
        responses = []
        for request in requests:
            if self.error_rate and self.rng.random() < self.error_rate:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("echo_delay: synthetic injected error")))
                continue
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            total = ids.astype(np.float64).sum(axis=1, keepdims=True)
            logits = (total + np.arange(self.num_labels)[None, :]).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", logits)]))
        return responses
'''


@dataclass(frozen=True)
class EchoDelaySpec:
    """Settings of the synthetic ``echo_delay`` model.

    Attributes:
        name: model name in the repository.
        delay_ms: sleep per executed batch, in milliseconds.
        error_rate: probability that one request fails (0..1).
        max_batch_size: Triton ``max_batch_size``.
        instance_count: CPU instances.
        max_queue_delay_us: dynamic batching queue delay.
        num_labels: width of the ``logits`` output.
        seed: seed of the error draw.
    """

    name: str = SYNTHETIC_MODEL_NAME
    delay_ms: float = 5.0
    error_rate: float = 0.0
    max_batch_size: int = 32
    instance_count: int = 1
    max_queue_delay_us: int = 1000
    num_labels: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")


def echo_delay_model_config(spec: EchoDelaySpec):
    """The synthetic model's Triton ``ModelConfig`` message (written by :mod:`icd.export.config_pbtxt`)."""
    from icd.export.config_pbtxt import BatchingSpec, InstanceSpec, build_model_config, io_specs

    inputs, outputs = io_specs("logits", spec.num_labels)
    params = {
        "icd_synthetic": "true",
        "icd_delay_ms": repr(float(spec.delay_ms)),
        "icd_error_rate": repr(float(spec.error_rate)),
        "icd_num_labels": str(spec.num_labels),
        "icd_seed": str(spec.seed),
    }
    return build_model_config(
        spec.name, backend="python", max_batch_size=spec.max_batch_size, inputs=inputs, outputs=outputs,
        instances=[InstanceSpec(spec.instance_count)], batching=BatchingSpec(spec.max_queue_delay_us),
        parameters=params,
    )


def echo_delay_config(spec: EchoDelaySpec) -> str:
    """The ``config.pbtxt`` text of the synthetic model."""
    from icd.export.config_pbtxt import config_text

    return config_text(echo_delay_model_config(spec))


def write_echo_delay_model(repository: Path, spec: EchoDelaySpec | None = None) -> Path:
    """Write (or overwrite) the synthetic model into ``repository/<spec.name>/``; returns that folder."""
    spec = spec or EchoDelaySpec()
    folder = Path(repository) / spec.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "1" / "model.py", _MODEL_PY)
    from icd.export.config_pbtxt import write_config

    write_config(folder / "config.pbtxt", echo_delay_model_config(spec))
    return folder
