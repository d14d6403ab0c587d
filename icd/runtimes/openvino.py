"""``openvino``: ``model.xml`` + ``model.bin`` (OpenVINO IR) compiled by the CPU plugin once per session.

Conversion: the Encoder → ONNX (:mod:`icd.runtimes.onnx_graph`) → ``ov.convert_model`` → ``ov.save_model``
(weights stored fp32: ``compress_to_fp16=False``). Precisions:

* ``fp32``: compiled with ``INFERENCE_PRECISION_HINT`` f32 (the CPU plugin otherwise computes in bf16 on CPUs with
  AVX512-BF16 / AMX — that is the ``bf16`` precision, measured apart);
* ``bf16``: compiled with ``INFERENCE_PRECISION_HINT`` bf16;
* ``int8``: NNCF post-training quantization driven by icd's decisions (:mod:`icd.runtimes.openvino_int8`).

fp32 and bf16 are exported with eager attention, which the conversion fuses into one ``ScaledDotProductAttention``
per layer (:func:`fp32_graph`; ``icd_runtime.json``'s ``recipe`` says which graph and how many fused operations).

Compile properties (threads, latency hint, precision) live in ``icd_runtime.json`` and in config.pbtxt's
parameters, so every loader compiles the model the same way. Triton: the python backend (embedded
``tritonserver``) or ``backend: "openvino"`` (NGC container).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from icd.runtimes.base import ExportedArtefact, Precision, Runtime, Session, Variant
from icd.runtimes.onnx_graph import export_onnx
from icd.runtimes.registry import register_runtime
from icd.runtimes.source import ModelSource

MODEL_FILES = ("model.xml", "model.bin")
_PRECISION_HINT = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.INT8: "f32"}


def compile_properties(precision: Precision, threads: int, hint: str | None = None) -> dict[str, str]:
    """CPU plugin properties for ``precision`` with ``threads`` inference threads (one stream, latency hint).

    ``hint`` overrides the inference precision (int8: what NNCF left unquantized computes in; f32 by default).
    """
    return {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_PRECISION_HINT": hint or _PRECISION_HINT[precision]}


def compile_model(model, properties: Mapping[str, str]):
    """``ov.Core().compile_model(model, "CPU", properties)`` (model: an ``ov.Model`` or a path)."""
    import openvino as ov

    return ov.Core().compile_model(model if not isinstance(model, Path) else str(model), "CPU", dict(properties))


def load_properties(sidecar, threads: int) -> dict[str, str]:
    """The compile properties an exported folder's sidecar (``icd_runtime.json``, or the ``ExportedArtefact`` it was
    written from) records, with ``threads`` inference threads: what every loader of the folder compiles with, and
    what Triton's openvino backend is configured with."""
    return {**compile_properties(sidecar.variant.precision, threads), **sidecar.properties,
            "INFERENCE_NUM_THREADS": str(threads)}


def convert_onnx(path: Path):
    """``ov.convert_model`` of an ONNX file, with a one-line error on failure."""
    import openvino as ov

    from icd.errors import ArtefactError

    try:
        return ov.convert_model(str(path))
    except (RuntimeError, ValueError) as exc:  # OpenVINO's conversion errors are RuntimeErrors
        raise ArtefactError(f"OpenVINO conversion failed: {str(exc).splitlines()[0]}") from None


FUSED_ATTENTION = "ScaledDotProductAttention"
"""OpenVINO's fused attention operation, made by its conversion from eager attention (BERT-style, no position
bias inside the scores; MPNet's relative position bias keeps the MatMuls apart)."""


def fused_attention_ops(model) -> int:
    """How many of OpenVINO's fused attention operations the converted ``model`` has."""
    return sum(op.get_type_name() == FUSED_ATTENTION for op in model.get_ops())


def fp32_graph(source: ModelSource, onnx_path: Path, output_gather: bool, fused_attention: bool = True):
    """The converted fp32 model of ``source`` (via ``onnx_path``) and how its attention was exported.

    ``fused_attention``: export with transformers' eager attention, which OpenVINO's conversion fuses into one
    ``ScaledDotProductAttention`` per layer where the model's attention allows (BERT-style; MPNet: not fused): the
    same function, faster than the SDPA graph (bench/results/runtimes_bf16_fused_amx.json). The int8 recipes
    choose it with their ``fused_attention`` field.
    """
    from icd.runtimes.onnx_graph import with_eager_attention

    encoder = source.torch_encoder(Precision.FP32, output_gather)
    export_onnx(with_eager_attention(encoder) if fused_attention else encoder, onnx_path)
    model = convert_onnx(onnx_path)
    return model, {"attention": "eager" if fused_attention else "sdpa",
                   "fused_attention_ops": fused_attention_ops(model)}


class OpenVinoRuntime(Runtime):
    name = "openvino"
    package = "openvino"
    precisions = (Precision.FP32, Precision.BF16, Precision.INT8)

    def export(self, source: ModelSource, folder: Path, precision: Precision, *, output_gather: bool,
               threads: int, recipe=None, fused_attention: bool = True) -> ExportedArtefact:
        """See :meth:`Runtime.export`; ``recipe`` (int8 only): an :class:`OpenVinoInt8Recipe` other than the
        default (bench/runtimes.py compares them); ``fused_attention`` (fp32 / bf16; int8: the recipe's field): the
        model exported with eager attention, which OpenVINO fuses (:func:`fp32_graph`), or with its default SDPA."""
        import openvino as ov

        self.check_precision(precision)
        work = Path(tempfile.mkdtemp(prefix=".openvino-", dir=folder))
        described: dict = {}
        hint = None
        extra: dict[str, str] = {}
        try:
            onnx_path = work / "model.onnx"
            if precision == Precision.INT8:
                from icd.runtimes.openvino_int8 import default_recipe, export_encoder, quantize_with_recipe

                plan = recipe or default_recipe(source)
                encoder, split_fp32 = export_encoder(source, plan, output_gather)
                export_onnx(encoder, onnx_path)
                model, rounding = quantize_with_recipe(convert_onnx(onnx_path), onnx_path, source, plan,
                                                       split_fp32, threads)
                described = {**plan.describe(source), **rounding}
                hint = plan.inference_precision
                extra = plan.compile_properties()
            else:
                model, described = fp32_graph(source, onnx_path, output_gather, fused_attention)
            ov.save_model(model, str(Path(folder) / MODEL_FILES[0]), compress_to_fp16=False)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        from icd.runtimes.sidecar import write_sidecar

        return write_sidecar(folder, ExportedArtefact(Variant(self.name, precision), MODEL_FILES,
                                                      {**compile_properties(precision, threads, hint), **extra}, described))

    def load(self, folder: Path, threads: int) -> Session:
        from icd.runtimes.sidecar import read_sidecar

        sidecar = read_sidecar(folder, self.name)
        properties = load_properties(sidecar, threads)
        compiled = compile_model(Path(folder) / MODEL_FILES[0], properties)
        request = compiled.create_infer_request()
        names = [port.get_any_name() for port in compiled.inputs]

        def run(ids, mask):
            return request.infer(dict(zip(names, (ids, mask))))[compiled.outputs[0]].copy()

        return Session(sidecar.variant, run, f"OpenVINO CPU, {threads} threads, "
                                             f"{properties['INFERENCE_PRECISION_HINT']}, latency hint")

    def triton_serving(self, precision: Precision, threads: int) -> tuple[dict[str, str], dict[str, str]]:
        return {"backend": "openvino", "default_model_filename": MODEL_FILES[0]}, compile_properties(precision, threads)


register_runtime(OpenVinoRuntime())
