"""``torchscript``: ``model.pt`` traced from the Encoder (fp32, or icd's own int8 Linears), run with torch.

Triton: the python backend (embedded ``tritonserver``) or ``platform: "pytorch_libtorch"`` (NGC container).
"""

from __future__ import annotations

from pathlib import Path

import torch

from icd.runtimes.base import ExportedArtefact, Precision, Runtime, Session, Variant
from icd.runtimes.registry import register_runtime
from icd.runtimes.sidecar import write_sidecar
from icd.runtimes.source import ModelSource

MODEL_FILE = "model.pt"


class TorchScriptRuntime(Runtime):
    name = "torchscript"
    package = "torch"
    precisions = (Precision.FP32, Precision.INT8)

    def __init__(self, trace_seq_len: int = 16) -> None:
        self.trace_seq_len = trace_seq_len

    def export(self, source: ModelSource, folder: Path, precision: Precision, *, output_gather: bool,
               threads: int) -> ExportedArtefact:
        from icd.export.torchscript import save_torchscript, trace_encoder

        self.check_precision(precision)
        model = source.torch_encoder(precision, output_gather=output_gather)
        save_torchscript(trace_encoder(model, self.trace_seq_len), Path(folder) / MODEL_FILE)
        recipe = {}
        if precision == Precision.INT8:
            # model.pt's int8 weights are repacked for the quantized engine current at load: loaders set this one.
            engine = (source.int8_record or {}).get("data", {}).get("engine") or torch.backends.quantized.engine
            recipe = {"int8": "the run's int8 record replayed (icd.transforms.runtime)", "quantized_engine": engine}
        return write_sidecar(folder, ExportedArtefact(Variant(self.name, precision), (MODEL_FILE,), {}, recipe))

    def load(self, folder: Path, threads: int) -> Session:
        from icd.runtimes.sidecar import read_sidecar
        from icd.transforms.int8_kernels import quantized_engine

        engine = read_sidecar(folder, self.name).recipe.get("quantized_engine")
        with quantized_engine(engine):  # int8 weights repack for the engine current at load (None: unchanged)
            module = torch.jit.load(str(Path(folder) / MODEL_FILE), map_location="cpu").eval()

        def run(ids, mask):
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
            finally:
                torch.set_num_threads(previous)

        return Session(self._variant(folder), run, f"torch.jit.load, {threads} threads")

    def _variant(self, folder: Path) -> Variant:
        from icd.runtimes.sidecar import read_sidecar

        return read_sidecar(folder, self.name).variant

    def triton_serving(self, precision: Precision, threads: int) -> tuple[dict[str, str], dict[str, str]]:
        return ({"platform": "pytorch_libtorch", "default_model_filename": MODEL_FILE},
                {"INTRA_OP_THREAD_COUNT": str(threads), "INTER_OP_THREAD_COUNT": "1"})


register_runtime(TorchScriptRuntime())
