"""Triton python-backend model exported by icd: runs the version's artefact on its runtime.

Written by ``icd export-triton`` into every version folder next to ``icd_runtime.py``. The runtime is named by the
``icd_runtime`` parameter of config.pbtxt (and ``icd_runtime.json`` in the folder): ``torchscript`` (``model.pt``
with torch), ``onnx`` (``model.onnx`` with ONNX Runtime) or ``openvino`` (``model.xml`` compiled once by
OpenVINO's CPU plugin). At load it

1. verifies ``checksums.sha256`` against every file of the version folder (a tampered or missing file refuses
   the load with a one-line reason; the other models keep serving);
2. validates the ``TRITON_ICD_*`` cache settings and the thread setting (a bad value refuses the load);
3. loads the artefact with its thread budget (``icd_threads`` parameter, else ``$ICD_THREADS_PER_INSTANCE``);
   torchscript on CPU, or on ``cuda:<device id>`` for a KIND_GPU instance;
4. registers the ICD metrics (labels ``model``, ``version``) on Triton's ``/metrics``.

Each ``execute`` gets the version's *request layout* — the output gather index, built from ``icd_layout.json`` and
the (decrypted) ``permutation.json`` — from the shared correlation cache (the ``triton_icd_correlation_*`` counters
count these lookups; a miss rebuilds it from the files, and a cache directory that cannot store makes misses, never
failed requests; the two increments, each a round trip to the server process, run on a helper thread while the batch
computes, and are done before ``execute`` returns), runs the batch Triton formed (requests grouped by sequence
length, never padded by the server; with ``icd_trim_padding`` > 0 the trailing columns that no row attends to are
cut first, to a multiple of that many tokens: clients that pad every text to one length still get one batch, and the
padding is not computed), applies the gather when the index is not empty (an *embedding* model whose hidden dim was
permuted), adds the measured time of that gather to ``triton_icd_permutation_time_seconds`` (exactly 0.0 when there
is none) and prints one ``ICD {json}`` log line.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import icd_runtime as rt  # noqa: E402  (the file next to this one)

METRICS = {
    "permutation_time": ("triton_icd_permutation_time_seconds",
                         "Time spent applying ICD permutations at run time (0 when folded into the weights)",
                         "COUNTER"),
    "cache_hits": ("triton_icd_correlation_cache_hits", "ICD correlation cache hits", "COUNTER"),
    "cache_total": ("triton_icd_correlation_total", "ICD correlation cache lookups", "COUNTER"),
    "layout_efficiency": ("triton_icd_layout_efficiency",
                          "ICD layout efficiency of the served version (block locality, docs/serving.md)", "GAUGE"),
}
RUNTIME_FILE = "icd_runtime.json"


class ArtefactLoadError(Exception):
    """A model file of the version folder cannot be read by its runtime (corrupt, truncated, wrong format)."""


def _read_sidecar(folder):
    try:
        return rt.json_document(RUNTIME_FILE, (folder / RUNTIME_FILE).read_text())
    except rt.LayoutError as exc:
        raise ArtefactLoadError(str(exc)) from None


def _torchscript(folder, threads, device):
    import torch

    torch.set_num_threads(threads)
    # int8 weights are repacked for the current quantized engine when model.pt loads: load them for the engine
    # they were packed (and verified) for, or the served outputs differ from the exported model's.
    sidecar = _read_sidecar(folder) if (folder / RUNTIME_FILE).is_file() else {}
    engine = sidecar.get("recipe", {}).get("quantized_engine")
    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    try:
        module = torch.jit.load(str(folder / "model.pt"), map_location=device).eval()
    except RuntimeError as exc:
        raise ArtefactLoadError(f"model.pt: torch cannot load it ({_one_line(exc)})") from None

    def run(ids, mask):
        with torch.inference_mode():
            out = module(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            return out.float().cpu().numpy()

    return run


def _onnx(folder, threads, device):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    except (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile,
            ort_errors.InvalidArgument, ort_errors.RuntimeException) as exc:
        raise ArtefactLoadError(f"model.onnx: ONNX Runtime cannot load it ({_one_line(exc)})") from None
    names = [i.name for i in session.get_inputs()]
    return lambda ids, mask: session.run(None, dict(zip(names, (ids, mask))))[0]


def _openvino(folder, threads, device):
    import openvino as ov

    doc = _read_sidecar(folder)
    properties = {**doc.get("properties", {}), "INFERENCE_NUM_THREADS": str(threads)}
    try:
        compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", properties)
    except RuntimeError as exc:
        raise ArtefactLoadError(f"model.xml / model.bin: OpenVINO cannot compile them ({_one_line(exc)})") from None
    request = compiled.create_infer_request()  # one per instance: execute runs one batch at a time
    names = [port.get_any_name() for port in compiled.inputs]
    output = compiled.outputs[0]
    return lambda ids, mask: request.infer(dict(zip(names, (ids, mask))))[output].copy()


LOADERS = {"torchscript": _torchscript, "onnx": _onnx, "openvino": _openvino}


def _one_line(exc):
    """A runtime's error on one line, without OpenVINO's ``Exception from src/...`` location lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from src/")]
    return (" ".join(useful or lines) or type(exc).__name__)[:300]


class TritonPythonModel:
    """The exported model (one instance per Triton model instance, each in its own stub process)."""

    def initialize(self, args):
        self.model_name = args["model_name"]
        self.version = str(args["model_version"])
        self.folder = Path(args["model_repository"]) / self.version
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        try:
            rt.verify_manifest(self.folder)
            self.settings = rt.CacheSettings.from_env(os.environ)
            self.cache = rt.SharedFileCache(self.settings)
            self.threads, self.threads_from = rt.instance_threads(params, os.environ)
            self.trim = rt.trim_multiple(params)
            self.limits = rt.InputLimits.from_parameters(params)
            layout = rt.LayoutRecord.load(self.folder, os.environ)
            layout.output_index()  # refuse an unbuildable request layout at load, not on the first request
        except (rt.ChecksumError, rt.CacheConfigError, rt.ThreadsError, rt.TrimError, rt.LimitsError,
                rt.DecryptionError, rt.LayoutError) as exc:
            raise pb_utils.TritonModelException(f"{self.model_name}: {exc}") from None
        self.layout_efficiency = layout.layout_efficiency
        self.runtime = params.get("icd_runtime", "torchscript")
        if self.runtime not in LOADERS:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: icd_runtime={self.runtime!r} is not one of {sorted(LOADERS)}")
        self.namespace = rt.manifest_digest(self.folder)
        self.output_name = config["output"][0]["name"]
        self.device = self._device(args)
        try:
            self.run = LOADERS[self.runtime](self.folder, self.threads, self.device)
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: runtime {self.runtime} is not installed in this Python ({exc})") from None
        except ArtefactLoadError as exc:
            raise pb_utils.TritonModelException(f"{self.model_name}: {self.folder}/{exc}") from None
        self.instance = args.get("model_instance_name", "")
        self._metrics()
        # the cache counters' round trips to the server overlap the forward, which runs without the GIL
        self.counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="icd-counters")
        trim = f"padding trimmed to a multiple of {self.trim} tokens" if self.trim else "padding kept"
        print(f"icd: loaded {self.model_name} v{self.version} ({self.instance}): runtime {self.runtime}, "
              f"{self.threads} thread(s) per instance from {self.threads_from}, {trim}", flush=True)
        if self.settings.preload:
            self._preload(layout)

    def _device(self, args):
        if args.get("model_instance_kind") != "GPU":
            return "cpu"
        if self.runtime != "torchscript":
            raise pb_utils.TritonModelException(
                f"{self.model_name}: KIND_GPU instances run torchscript only here (runtime {self.runtime})")
        import torch

        if not torch.cuda.is_available():
            raise pb_utils.TritonModelException(f"{self.model_name}: KIND_GPU instance but torch sees no CUDA")
        return torch.device(f"cuda:{int(args['model_instance_device_id'])}")

    def _metrics(self):
        labels = {"model": self.model_name, "version": self.version}
        self.families, self.metrics = {}, {}  # a MetricFamily must outlive its Metrics: keep both
        for key, (name, description, kind) in METRICS.items():
            family = pb_utils.MetricFamily(name=name, description=description,
                                           kind=getattr(pb_utils.MetricFamily, kind))
            self.families[key] = family
            self.metrics[key] = family.Metric(labels=labels)
        self.metrics["layout_efficiency"].set(self.layout_efficiency)

    # ------------------------------------------------------------------------------------------ cache
    def _layout_key(self):
        return f"{self.namespace}:request-layout"

    def _preload(self, layout):
        # the request layout first: what every request looks up is stored even when the matrices overflow the bound
        entries = {self._layout_key(): layout.output_index()}
        if layout.correlation_file:
            with np.load(self.folder / layout.correlation_file, allow_pickle=False) as data:
                entries.update({f"{self.namespace}:corr:{name}": data[name] for name in data.files})
        self.cache.put_many(entries)  # one eviction pass for all of them
        if self.cache.store_error:  # the model serves: every lookup misses until the directory takes entries
            print(f"icd: {self.model_name} v{self.version}: preload not stored: {self.cache.store_error}", flush=True)

    def _lookup_layout(self):
        """The request layout (output gather index) from the cache (a miss rebuilds it from the version folder),
        and the counting of that lookup started on the helper thread: wait for the returned future."""
        lookup = self.cache.get(self._layout_key(), lambda: rt.request_layout(self.folder, os.environ))
        return lookup, self.counting.submit(self._count_lookup, lookup.hit)

    def _count_lookup(self, hit):
        self.metrics["cache_total"].increment(1)
        if hit:
            self.metrics["cache_hits"].increment(1)

    # ------------------------------------------------------------------------------------------ inference
    def execute(self, requests):
        started = time.perf_counter()
        lookup, counted = self._lookup_layout()
        output_index = lookup.value if lookup.value.size else None
        looked_up = time.perf_counter()
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            if ids.shape != mask.shape or ids.ndim != 2:
                problem = (f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must have equal "
                           "[batch, seq] shapes")
            else:
                problem = self.limits.problem(ids, mask)
            if problem:  # this request's own error (HTTP 400 / gRPC INVALID_ARGUMENT); the others of the batch run
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"{self.model_name}: {problem}", pb_utils.TritonError.INVALID_ARG))
                continue
            groups.setdefault(ids.shape[1], []).append((index, ids, mask))
        gathered = time.perf_counter()
        permutation_s = 0.0  # stays 0.0 when every permutation is folded into the weights
        batch, run_lens = 0, []
        for seq_len in sorted(groups):  # run_seq_lens in the order of seq_lens
            items = groups[seq_len]
            # trailing padding no row attends to is not computed
            ids, mask = rt.trim_batch(np.concatenate([item[1] for item in items]),
                                      np.concatenate([item[2] for item in items]), self.trim)
            run_lens.append(ids.shape[1])
            out = np.asarray(self.run(ids, mask), dtype=np.float32)
            if output_index is not None:  # the one run-time permutation: gather the output's last axis
                begin = time.perf_counter()
                out = np.take(out, output_index, axis=-1)
                permutation_s += time.perf_counter() - begin
            batch += out.shape[0]
            row = 0
            for index, part, _ in items:
                rows = part.shape[0]
                tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(out[row:row + rows]))
                responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
                row += rows
        forwarded = time.perf_counter()
        counted.result()  # the counters include this batch before its responses leave
        counters_waited = time.perf_counter()
        if permutation_s:  # each increment is a round trip to the server process: none for a folded layout
            self.metrics["permutation_time"].increment(permutation_s)
        fields = {
            "model": self.model_name, "version": self.version, "instance": self.instance, "runtime": self.runtime,
            "requests": len(requests), "batch_size": batch, "seq_lens": sorted(groups), "run_seq_lens": run_lens,
            "permutation_time": permutation_s, "permutation_time_s": permutation_s,
            "cache": "hit" if lookup.hit else "miss", "infer_ms": round((forwarded - gathered) * 1e3, 3),
            "total_ms": round((forwarded - started) * 1e3, 3),
        }
        if lookup.store_error:  # served all the same; the hit-rate alert sees the misses
            fields["cache_error"] = lookup.store_error
        if self.settings.profile:
            fields["profile"] = {
                "cache_lookup_ms": round((looked_up - started) * 1e3, 4),
                "gather_ms": round((gathered - looked_up) * 1e3, 4),
                "forward_ms": round((forwarded - gathered) * 1e3, 4),
                "counters_wait_ms": round((counters_waited - forwarded) * 1e3, 4),
                "device": str(self.device), "threads": self.threads,
            }
        print(rt.icd_log_line(fields), flush=True)
        return responses

    def finalize(self):
        if hasattr(self, "counting"):  # absent when initialize refused the load
            self.counting.shutdown(wait=True)
        self.run = None
        self.metrics = {}  # Metrics before their families
        self.families = {}
