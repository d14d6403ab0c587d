"""Triton python-backend model exported by icd: runs ``model.pt`` (TorchScript) with torch.

Written by ``icd export-triton`` into every version folder next to ``icd_runtime.py``. At load it

1. verifies ``checksums.sha256`` against every file of the version folder (a tampered or missing file refuses
   the load with a one-line reason; the other models keep serving);
2. validates the ``TRITON_ICD_*`` cache settings (a bad value refuses the load);
3. loads ``model.pt`` on CPU, or on ``cuda:<device id>`` for a KIND_GPU instance;
4. registers the ICD metrics (labels ``model``, ``version``) on Triton's ``/metrics``.

Each ``execute`` looks up the version's layout entry in the shared correlation cache (the
``triton_icd_correlation_*`` counters count these lookups), runs the batch Triton formed (requests grouped by
sequence length, never padded), adds the measured time spent applying run-time permutations to
``triton_icd_permutation_time_seconds`` and prints one ``ICD {json}`` log line. icd folds permutations into the
weights; the only run-time one is the output gather of an *embedding* model whose hidden dim was permuted
(``runtime_permutations.output`` in icd_layout.json), timed around that gather. Otherwise no permutation code runs
and exactly 0.0 is added.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
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


class TritonPythonModel:
    """The exported model (one instance per Triton model instance, each in its own stub process)."""

    def initialize(self, args):
        self.model_name = args["model_name"]
        self.version = str(args["model_version"])
        self.folder = Path(args["model_repository"]) / self.version
        config = json.loads(args["model_config"])
        try:
            rt.verify_manifest(self.folder)
            self.settings = rt.CacheSettings.from_env(os.environ)
        except (rt.ChecksumError, rt.CacheConfigError) as exc:
            raise pb_utils.TritonModelException(f"{self.model_name}: {exc}") from None
        try:
            self.layout = rt.LayoutRecord.load(self.folder, os.environ)
        except rt.DecryptionError as exc:
            raise pb_utils.TritonModelException(f"{self.model_name}: {exc}") from None
        unknown = sorted(set(self.layout.runtime_permutations) - {"output"})
        if unknown:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: unsupported run-time permutations {unknown} in {rt.LAYOUT_FILE} (only 'output')")
        self.namespace = rt.manifest_digest(self.folder)
        self.cache = rt.SharedFileCache(self.settings)
        self.output_name = config["output"][0]["name"]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("icd_torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = self._device(args)
        self.model = torch.jit.load(str(self.folder / "model.pt"), map_location=self.device).eval()
        output_perm = self.layout.runtime_permutations.get("output")
        self.output_index = None if output_perm is None else torch.tensor(output_perm, dtype=torch.long,
                                                                          device=self.device)
        self.instance = args.get("model_instance_name", "")
        self._metrics()
        if self.settings.preload:
            self._preload()

    def _device(self, args):
        if args.get("model_instance_kind") == "GPU":
            if not torch.cuda.is_available():
                raise pb_utils.TritonModelException(f"{self.model_name}: KIND_GPU instance but torch sees no CUDA")
            return torch.device(f"cuda:{int(args['model_instance_device_id'])}")
        return torch.device("cpu")

    def _metrics(self):
        labels = {"model": self.model_name, "version": self.version}
        self.families, self.metrics = {}, {}  # a MetricFamily must outlive its Metrics: keep both
        for key, (name, description, kind) in METRICS.items():
            family = pb_utils.MetricFamily(name=name, description=description,
                                           kind=getattr(pb_utils.MetricFamily, kind))
            self.families[key] = family
            self.metrics[key] = family.Metric(labels=labels)
        self.metrics["layout_efficiency"].set(self.layout.layout_efficiency)

    # ------------------------------------------------------------------------------------------ cache
    def _layout_key(self):
        return f"{self.namespace}:layout"

    def _correlations(self):
        if not self.layout.correlation_file:
            return {}
        with np.load(self.folder / self.layout.correlation_file, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}

    def _preload(self):
        for name, array in self._correlations().items():
            self.cache.put(f"{self.namespace}:corr:{name}", array)
        self.cache.put(self._layout_key(), self.layout.layout_array())

    def _lookup_layout(self):
        lookup = self.cache.get(self._layout_key(), self.layout.layout_array)
        self.metrics["cache_total"].increment(1)
        if lookup.hit:
            self.metrics["cache_hits"].increment(1)
        return lookup

    # ------------------------------------------------------------------------------------------ inference
    def execute(self, requests):
        started = time.perf_counter()
        lookup = self._lookup_layout()
        looked_up = time.perf_counter()
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
            if ids.shape != mask.shape or ids.ndim != 2:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} must have equal [batch, seq] shapes"))
                continue
            groups.setdefault(ids.shape[1], []).append((index, ids, mask))
        gathered = time.perf_counter()
        permutation_s = 0.0  # stays 0.0 when every permutation is folded into the weights
        batch = 0
        with torch.inference_mode():
            for items in groups.values():
                ids = torch.from_numpy(np.concatenate([item[1] for item in items])).to(self.device)
                mask = torch.from_numpy(np.concatenate([item[2] for item in items])).to(self.device)
                out = self.model(ids, mask)
                if self.output_index is not None:  # the one run-time permutation: gather the output's last axis
                    begin = time.perf_counter()
                    out = out.index_select(-1, self.output_index)
                    if out.is_cuda:
                        torch.cuda.synchronize(out.device)
                    permutation_s += time.perf_counter() - begin
                out = out.float().cpu().numpy()
                batch += out.shape[0]
                row = 0
                for index, part, _ in items:
                    rows = part.shape[0]
                    tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(out[row:row + rows]))
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
                    row += rows
        forwarded = time.perf_counter()
        self.metrics["permutation_time"].increment(permutation_s)
        fields = {
            "model": self.model_name, "version": self.version, "instance": self.instance,
            "requests": len(requests), "batch_size": batch, "seq_lens": sorted(groups),
            "permutation_time": permutation_s, "permutation_time_s": permutation_s,
            "cache": "hit" if lookup.hit else "miss", "infer_ms": round((forwarded - gathered) * 1e3, 3),
            "total_ms": round((forwarded - started) * 1e3, 3),
        }
        if self.settings.profile:
            fields["profile"] = {
                "cache_lookup_ms": round((looked_up - started) * 1e3, 4),
                "gather_ms": round((gathered - looked_up) * 1e3, 4),
                "forward_ms": round((forwarded - gathered) * 1e3, 4),
                "device": str(self.device),
            }
        print(rt.icd_log_line(fields), flush=True)
        return responses

    def finalize(self):
        self.model = None
        self.metrics = {}  # Metrics before their families
        self.families = {}
