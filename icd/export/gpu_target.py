"""Which exported variants can serve on ``KIND_GPU`` instances (``--target gpu``).

``icd profile`` times its variants on this machine's CPU, and icd's python backend runs only TorchScript on a GPU
(``model.py``: a ``KIND_GPU`` instance of another runtime refuses to load). An export for a GPU target therefore
leaves a CPU-only profile choice aside and refuses a CPU-only variant asked for by name, before anything is
written, instead of a model Triton cannot load.
"""

from __future__ import annotations

from icd.export.options import Platform
from icd.runtimes.base import Precision, Variant


def gpu_problem(variant: Variant, platform: Platform) -> str | None:
    """Why ``variant`` served by ``platform`` cannot run on ``KIND_GPU`` instances; None when it can."""
    if variant.runtime == "torchscript":
        if variant.precision == Precision.INT8:
            return "icd's int8 TorchScript Linears (torch's dynamic quantized kernels) run on the CPU only"
        return None
    if variant.runtime == "onnx" and platform == Platform.ONNXRUNTIME_ONNX:
        return None  # Triton's onnxruntime backend runs KIND_GPU instances on ONNX Runtime's CUDA provider
    where = "icd's python backend" if platform == Platform.PYTHON else f"Triton's {platform.value} backend"
    return f"{variant.runtime} runs on the CPU in {where}"
