"""``onnx``: ``model.onnx`` run with ONNX Runtime (CPU execution provider, ``ORT_ENABLE_ALL``).

int8: ONNX Runtime's dynamic quantization (``quantize_dynamic``: int8 per-channel weights, activations quantized
per call) of icd's *smoothed* fp32 graph (icd's unfoldable input scalings are explicit ``Mul`` nodes, so the
quantized MatMuls see icd's easier-to-quantize weights and inputs); the Linears icd keeps fp32 stay fp32.
Triton: the python backend (embedded ``tritonserver``) or ``platform: "onnxruntime_onnx"`` (NGC container).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from icd.runtimes.base import ExportedArtefact, Precision, Runtime, Session, Variant
from icd.runtimes.onnx_graph import export_onnx, matmul_nodes
from icd.runtimes.registry import register_runtime
from icd.runtimes.sidecar import write_sidecar
from icd.runtimes.source import ModelSource

MODEL_FILE = "model.onnx"


def quantize_onnx_int8(fp32_path: Path, out_path: Path, exclude_nodes: list[str]) -> None:
    """ONNX Runtime dynamic int8 (per-channel weights, MatMul only) of ``fp32_path`` into ``out_path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude_nodes)


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (1 inter-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    name = "onnx"
    package = "onnxruntime"
    precisions = (Precision.FP32, Precision.INT8)

    def export(self, source: ModelSource, folder: Path, precision: Precision, *, output_gather: bool,
               threads: int) -> ExportedArtefact:
        self.check_precision(precision)
        target = Path(folder) / MODEL_FILE
        if precision == Precision.FP32:
            export_onnx(source.torch_encoder(Precision.FP32, output_gather), target)
            return write_sidecar(folder, ExportedArtefact(Variant(self.name, precision), (MODEL_FILE,), {}, {}))
        work = Path(tempfile.mkdtemp(prefix=".onnx-int8-", dir=folder))
        try:
            smoothed = work / "smoothed.onnx"
            export_onnx(source.smoothed_encoder(output_gather), smoothed)
            _, kept = source.int8_linears()
            excluded = [node for nodes in matmul_nodes(smoothed, kept).values() for node in nodes]
            quantize_onnx_int8(smoothed, target, excluded)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        recipe = {"method": "onnxruntime.quantization.quantize_dynamic", "per_channel": True,
                  "weight_type": "QInt8", "op_types": ["MatMul"], "icd_smoothing": source.int8_record is not None,
                  "kept_fp32": kept}
        return write_sidecar(folder, ExportedArtefact(Variant(self.name, precision), (MODEL_FILE,), {}, recipe))

    def load(self, folder: Path, threads: int) -> Session:
        from icd.runtimes.sidecar import read_sidecar

        session = ort_session(Path(folder) / MODEL_FILE, threads)
        names = [i.name for i in session.get_inputs()]

        def run(ids, mask):
            return session.run(None, dict(zip(names, (ids, mask))))[0]

        return Session(read_sidecar(folder, self.name).variant, run, f"ONNX Runtime CPU, {threads} intra-op threads")

    def triton_serving(self, precision: Precision, threads: int) -> tuple[dict[str, str], dict[str, str]]:
        return ({"platform": "onnxruntime_onnx", "backend": "onnxruntime", "default_model_filename": MODEL_FILE},
                {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})


register_runtime(OnnxRuntime())
