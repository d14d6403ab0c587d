"""Where OpenVINO int8's time goes: per-operation times of NNCF int8 and icd's recipe, on two exported graphs.

Real MiniLM-L6 weights. Each variant is exported through ``icd.runtimes`` (OpenVINO int8, a recipe of
``icd.runtimes.openvino_int8``) from one of two ONNX graphs of the same model:

* ``sdpa``: what icd exports today — transformers' default attention (``scaled_dot_product_attention``), which
  torch's ONNX exporter writes as MatMul, Softmax and a NaN guard (``Where(IsNaN(softmax))``) for boolean masks;
* ``eager``: the model switched to transformers' eager attention before export (``set_attn_implementation``):
  MatMul, scale, additive mask, Softmax, MatMul — a pattern OpenVINO fuses into its own attention operation.

For every variant, in one process: fidelity against eager torch fp32 on two held-out sets (as bench/runtimes.py),
the wall-clock latency at batch 8×128 (``measure_latency_interleaved``, shuffled rounds; ratio to NNCF int8 on the
``sdpa`` graph round by round with its bootstrap interval), the FakeQuantize count of the saved model, and the CPU
plugin's own per-operation times (``PERF_COUNT``, summed per operation type and kernel, mean over the profiled
rounds; a separate compile, so the timed latency carries no profiling overhead).

Usage: ``.venv/bin/python bench/ov_profile.py [--runs 40] [--profile-runs 20] [--threads 2] [--out PATH]``
"""

from __future__ import annotations

import argparse
import copy
import random
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icd.config.schema import ModelSection
from icd.data.corpus import load_split
from icd.io.bench_result import BenchRecord
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.measure.latency import measure_latency_interleaved, paired_ratio, ratio_text, synthetic_batch
from icd.model.loader import load_encoder, load_tokenizer
from icd.runtimes.base import Precision
from icd.runtimes.openvino import compile_model, load_properties
from icd.runtimes.openvino_int8 import RECIPES
from icd.runtimes.registry import get_runtime
from icd.runtimes.sidecar import read_sidecar
from icd.runtimes.source import ModelSource

RESULT = Path(__file__).parent / "results" / "ov_profile.json"
ANCHOR = "sdpa / nncf_default"
VARIANTS = (
    ("sdpa", RECIPES["nncf_default"]),
    ("sdpa", RECIPES["icd_outliers"]),
    ("sdpa", replace(RECIPES["icd_outliers"], name="icd_outliers_attention_int8", attention_matmuls_fp32=())),
    ("eager", RECIPES["nncf_default"]),
    ("eager", replace(RECIPES["icd_outliers"], name="icd_outliers_attention_int8", attention_matmuls_fp32=())),
    ("eager", replace(RECIPES["icd_outliers"], name="icd_outliers_attention_fp32", attention_matmuls_fp32=("values",))),
    ("eager", RECIPES["icd_outliers_fused_sym"]),
)
"""(graph, recipe). On the eager graph OpenVINO's conversion fuses each layer's attention into one
ScaledDotProductAttention operation, named after the ``values`` product: leaving that out leaves the whole
attention fp32 (what ``icd_outliers`` does on the sdpa graph with both products); ``scores`` has no node of its
own there. ``icd_outliers_fused_sym`` (added 2026-12-01, after bench/results/ov_profile_amx.json): the attention-int8
recipe with symmetric activation quantizers and the FFN output's input shifted unsigned, for the int8 MatMul kernel
the CPU plugin picks."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=40, help="timed interleaved rounds")
    parser.add_argument("--profile-runs", type=int, default=20, help="rounds with PERF_COUNT on")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _sources(fp32, tokenizer, calibration: list[str]) -> dict[str, ModelSource]:
    """One ModelSource per graph, both with icd's int8 record (``Int8Config()`` on the calibration texts)."""
    from runtimes import icd_int8_record

    record, _ = icd_int8_record(fp32, tokenizer, calibration)
    eager = copy.deepcopy(fp32)
    eager.bert.set_attn_implementation("eager")
    return {graph: ModelSource(model, [record], tokenizer, calibration, 128)
            for graph, model in (("sdpa", fp32), ("eager", eager))}


def _fake_quantize_count(folder: Path) -> int:
    import openvino as ov

    model = ov.Core().read_model(str(folder / "model.xml"))
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def _op_times(folders: dict[str, Path], inputs: tuple[np.ndarray, np.ndarray], args) -> dict[str, dict[str, Any]]:
    """Per variant: the plugin's operation times summed per (type, kernel), mean ms per inference, over
    ``profile_runs`` shuffled rounds after ``warmup``."""
    requests = {}
    for name, folder in folders.items():
        properties = load_properties(read_sidecar(folder, "openvino"), args.threads)
        compiled = compile_model(folder / "model.xml", {**properties, "PERF_COUNT": "YES"})
        feed = dict(zip((port.get_any_name() for port in compiled.inputs), inputs))
        requests[name] = (compiled.create_infer_request(), feed)
    totals: dict[str, Counter] = {name: Counter() for name in folders}
    order, rng = list(folders), random.Random(0)
    for round_index in range(args.warmup + args.profile_runs):
        rng.shuffle(order)
        for name in order:
            request, feed = requests[name]
            request.infer(feed)
            if round_index < args.warmup:
                continue
            for op in request.get_profiling_info():
                totals[name][f"{op.node_type} / {op.exec_type}"] += op.real_time.total_seconds() * 1000
    out = {}
    for name, counter in totals.items():
        per_run = {key: round(ms / args.profile_runs, 3) for key, ms in counter.most_common() if ms > 0}
        out[name] = {"sum_ms": round(sum(per_run.values()), 2), "by_op_and_kernel_ms": per_run}
    return out


def run(args) -> dict[str, Any]:
    section = ModelSection()
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    second = load_split(args.calibration, args.heldout, seed=1).heldout
    sources = _sources(fp32, tokenizer, split.calibration)
    work = Path(tempfile.mkdtemp(prefix="icd-bench-ov-profile-"))
    runtime = get_runtime("openvino")
    try:
        folders, sessions, rows = {}, {}, {}
        for graph, recipe in VARIANTS:
            name = f"{graph} / {recipe.name}"
            rows[name] = {"graph": graph, "recipe": recipe.name}
            folders[name] = Path(tempfile.mkdtemp(dir=work))
            runtime.export(sources[graph], folders[name], Precision.INT8, output_gather=True, threads=args.threads,
                           recipe=recipe)
            sessions[name] = runtime.load(folders[name], args.threads)
            rows[name]["fake_quantize_ops"] = _fake_quantize_count(folders[name])
            print(f"[{name}] exported", flush=True)
        torch.set_num_threads(args.threads)
        for set_name, texts in (("heldout_seed0", split.heldout), ("heldout_seed1", second)):
            reference = encode(fp32, tokenizer, texts, 32, 128)
            for name, session in sessions.items():
                rows[name][set_name] = fidelity(reference, encode(session, tokenizer, texts, 32, 128)).to_dict()
        latency = measure_latency_interleaved(sessions, 8, 128, warmup=args.warmup, runs=args.runs,
                                              threads=args.threads)
        ids, mask = synthetic_batch(fp32, 8, 128)
        profiles = _op_times(folders, (ids.numpy(), mask.numpy()), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, row in rows.items():
        row["latency_median_ms"] = latency[name].median_ms
        row["latency_ratio_to_sdpa_nncf_default"] = paired_ratio(latency[name].samples_ms,
                                                                 latency[ANCHOR].samples_ms).to_dict()
        row["latency_ratio_to_same_graph_nncf_default"] = paired_ratio(
            latency[name].samples_ms, latency[f"{row['graph']} / nncf_default"].samples_ms).to_dict()
        row["latency_samples_ms"] = list(latency[name].samples_ms)
        row["op_profile"] = profiles[name]
    return {"bench": "ov_profile", "model": "all-MiniLM-L6-v2 (real weights), mean pooling",
            "latency_how": latency[ANCHOR].how, "graphs": {
                "sdpa": "transformers' default attention (SDPA) as torch's ONNX exporter writes it, NaN guard included",
                "eager": "transformers' eager attention: MatMul, scale, additive mask, Softmax, MatMul"},
            "op_profile_how": f"OpenVINO PERF_COUNT, {args.profile_runs} shuffled rounds after {args.warmup} warm-up, "
                              "batch 8x128 (the latency harness' inputs); ms per inference summed per operation "
                              "type / kernel; sum_ms excludes time between operations",
            "variants": [{"variant": name, **row} for name, row in rows.items()]}


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    record = BenchRecord.start(None if argv is None else ["bench/ov_profile.py", *argv])
    figures = run(args)
    record.write(args.out, figures)
    print(f"{'variant':44} {'FQ':>3} {'cos':>8} {'nn':>6} {'cos2':>8} {'nn2':>6} {'med_ms':>7} {'ops_ms':>7}"
          f"  {'/ sdpa nncf (95% CI)':>22}  {'/ same-graph nncf':>22}")
    for row in figures["variants"]:
        a, b = row["heldout_seed0"], row["heldout_seed1"]
        ratio, same = row["latency_ratio_to_sdpa_nncf_default"], row["latency_ratio_to_same_graph_nncf_default"]
        print(f"{row['variant']:44} {row['fake_quantize_ops']:3d} {a['cos_mean']:8.5f} {a['nn_agreement']:6.3f} "
              f"{b['cos_mean']:8.5f} {b['nn_agreement']:6.3f} {row['latency_median_ms']:7.1f} "
              f"{row['op_profile']['sum_ms']:7.1f}  {ratio_text(ratio):>22}  {ratio_text(same):>22}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
