"""Runtimes × precisions on real MiniLM-L6 weights: torch, TorchScript, ONNX Runtime, OpenVINO (+ NNCF recipes).

``--model mpnet-base`` runs the same on all-mpnet-base-v2 (110M, real weights; ``make setup`` fetches them).

Every variant but the torch reference is *exported* through its runtime in ``icd/runtimes/`` and loaded back, so
what is timed is the artefact ``icd export-triton --runtime`` writes. One process, same texts, same harness:

* fidelity: mean-pooled embeddings vs the torch fp32 model on two held-out sets (256 docstrings of the default corpus each,
  seeds 0 and 1 of the held-out pool; calibration texts are never among them): cos mean / min, NN agreement;
* latency: ``icd.measure.latency.measure_latency_interleaved`` at batch 8×128 of random ids (``--inputs random``,
  the default) or, with ``--inputs text``, on what a server of icd's exports runs — 4 batches of 8 held-out texts
  padded to 128 tokens as clients send them, each batch's trailing padding trimmed
  (``icd.runtimes.profile.served_workload``, as ``icd profile`` times); ``--threads`` threads, every
  variant once per round in a shuffled order, round after round (load from other processes falls on all alike);
  each row keeps its samples and its latency relative to NNCF int8's (``nncf_default``) round by round: the median
  per-round ratio and its 95 % bootstrap interval (``icd.measure.latency.paired_ratio``).

The icd int8 decisions (smoothing exponents, per-token Linears, fp32 Linears) come from ``Int8Config()`` searched
on 512 calibration texts, as ``icd run`` does. Writes ``bench/results/runtimes.json`` and prints a table.

Usage: ``.venv/bin/python bench/runtimes.py [--model minilm] [--threads 2] [--runs 20] [--recipes NAME ...]``
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from icd.io.bench_result import cpu_model, load_is_high, package_versions

RESULT = Path(__file__).parent / "results" / "runtimes.json"
NNCF_DEFAULT = "openvino:int8 nncf_default"
"""The anchor of the runtime target: every row also gives its latency relative to this one, round by round."""
NNCF_DEFAULT_BF16 = "openvino:int8 nncf_default_bf16"
"""NNCF int8 as the CPU plugin runs it by default on CPUs with bf16 units (what NNCF left unquantized in bf16):
when ``--recipes`` has it, every row also gives its latency relative to this one."""
MODELS = {"minilm": "all-MiniLM-L6-v2 (real weights), embedding task, mean pooling",
          "mpnet-base": "all-mpnet-base-v2 (real weights, 110M), embedding task, mean pooling"}
"""``--model`` choices (bench/compaction.py's ``model_section`` loads them) and how the results JSON names them."""


def _parse(argv: list[str]) -> argparse.Namespace:
    from icd.runtimes.openvino_int8 import RECIPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", choices=sorted(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed interleaved rounds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                        help="OpenVINO int8 (NNCF) recipes to compare")
    parser.add_argument("--inputs", choices=("random", "text"), default="random",
                        help="timed batches: 8x128 random ids, or held-out texts as a trimming server runs them")
    parser.add_argument("--no-base", action="store_true",
                        help="only torch fp32, icd's torch int8 and the --recipes (a recipe comparison)")
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            **package_versions(("onnxruntime", "openvino", "nncf"))}


def icd_int8_record(fp32, tokenizer, calibration: list[str], max_length: int = 128) -> tuple[dict, float]:
    """icd's int8 record of ``fp32`` (``Int8Config()`` searched on ``calibration``, as ``icd run`` does) and the
    search's seconds (bench/ov_profile.py and bench/compaction.py use it too)."""
    from icd.transforms.api import TransformContext
    from icd.transforms.configs import Int8Config
    from icd.transforms.int8 import prepare_int8_runtime

    start = time.perf_counter()
    context = TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32,
                               max_length=max_length)
    record, _ = prepare_int8_runtime(copy.deepcopy(fp32), Int8Config(), context)
    return record, time.perf_counter() - start


def _export(runtime_name: str, source, precision, work: Path, threads: int, recipe=None, **options):
    """``runtime_name``'s export of ``source`` at ``precision`` (``recipe`` and ``options``: the runtime's own export
    keywords) loaded back: the session, the artefact and the export's seconds."""
    from icd.runtimes.registry import get_runtime

    folder = Path(tempfile.mkdtemp(prefix=f"{runtime_name}-", dir=work))
    runtime = get_runtime(runtime_name)
    if recipe is not None:
        options["recipe"] = recipe
    start = time.perf_counter()
    artefact = runtime.export(source, folder, precision, output_gather=True, threads=threads, **options)
    seconds = time.perf_counter() - start
    return runtime.load(folder, threads), artefact, seconds


def _variants(args, fp32, tokenizer, split, work: Path) -> dict[str, dict[str, Any]]:
    from icd.runtimes.base import Precision
    from icd.runtimes.openvino_int8 import RECIPES
    from icd.runtimes.source import ModelSource

    record, search_s = icd_int8_record(fp32, tokenizer, split.calibration)
    icd_source = ModelSource(fp32, [record], tokenizer, split.calibration, 128)
    plain = ModelSource(fp32, [], tokenizer, split.calibration, 128)
    out: dict[str, dict[str, Any]] = {"torch_fp32": {"model": fp32, "how": "eager torch fp32 (reference)"}}
    plan = [
        ("torchscript:fp32", "torchscript", plain, Precision.FP32, None, "TorchScript trace, fp32"),
        ("torchscript:int8 (icd int8)", "torchscript", icd_source, Precision.INT8, None,
         f"icd's int8 Linears (Int8Config(), search {search_s:.0f} s), traced"),
        ("onnx:fp32", "onnx", plain, Precision.FP32, None, "ONNX Runtime, ORT_ENABLE_ALL"),
        ("onnx:int8 plain", "onnx", plain, Precision.INT8, None, "quantize_dynamic per-channel, no icd decisions"),
        ("onnx:int8 (icd smoothing)", "onnx", icd_source, Precision.INT8, None,
         "quantize_dynamic per-channel of icd's smoothed graph, icd's fp32 Linears kept"),
        ("openvino:fp32", "openvino", plain, Precision.FP32, None,
         "OpenVINO CPU, INFERENCE_PRECISION_HINT f32, eager attention fused by OpenVINO (icd's export)"),
        ("openvino:bf16", "openvino", plain, Precision.BF16, None,
         "OpenVINO CPU, bf16 (the plugin's default here), eager attention fused by OpenVINO (icd's export)"),
        ("openvino:fp32 (sdpa graph)", "openvino", plain, Precision.FP32, {"fused_attention": False},
         "OpenVINO CPU, f32, transformers' default SDPA attention graph (icd's export before 2026-12-02)"),
        ("openvino:bf16 (sdpa graph)", "openvino", plain, Precision.BF16, {"fused_attention": False},
         "OpenVINO CPU, bf16, transformers' default SDPA attention graph (icd's export before 2026-12-02)"),
    ]
    if args.no_base:
        plan = [row for row in plan if row[0] == "torchscript:int8 (icd int8)"]
    for name in args.recipes:
        recipe = RECIPES[name]
        plan.append((f"openvino:int8 {name}", "openvino", icd_source if recipe.icd_smoothing or recipe.keep_icd_fp32
                     or recipe.ignore_per_token else plain, Precision.INT8, {"recipe": recipe},
                     f"NNCF recipe {recipe}"))
    for name, runtime, source, precision, options, how in plan:
        session, artefact, seconds = _export(runtime, source, precision, work, args.threads, **(options or {}))
        out[name] = {"model": session, "how": how, "export_s": seconds, "recipe": dict(artefact.recipe)}
        print(f"[{name}] exported in {seconds:.1f} s", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from compaction import model_section

    from icd.data.corpus import load_split
    from icd.io.atomic import write_json_atomic
    from icd.measure.encode import encode
    from icd.measure.fidelity import fidelity
    from icd.measure.latency import measure_latency_interleaved, paired_ratio, ratio_text
    from icd.model.loader import load_encoder, load_tokenizer
    from icd.runtimes.profile import served_workload

    load_start = os.getloadavg()
    section = model_section(args.model)
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    second = load_split(args.calibration, args.heldout, seed=1).heldout
    work = Path(tempfile.mkdtemp(prefix="icd-bench-runtimes-"))
    try:
        variants = _variants(args, fp32, tokenizer, split, work)
        torch.set_num_threads(args.threads)
        fid: dict[str, dict[str, Any]] = {}
        for set_name, texts in (("heldout_seed0", split.heldout), ("heldout_seed1", second)):
            reference = encode(fp32, tokenizer, texts, 32, 128)
            for name, v in variants.items():
                fid.setdefault(name, {})[set_name] = fidelity(reference, encode(v["model"], tokenizer, texts, 32, 128))
        load_timing = os.getloadavg()
        workload = None if args.inputs == "random" else served_workload(tokenizer, split.heldout, 8, 128)
        latency = measure_latency_interleaved({n: v["model"] for n, v in variants.items()}, 8, 128,
                                              warmup=args.warmup, runs=args.runs, threads=args.threads,
                                              workloads=workload and dict.fromkeys(variants, workload))
        load_end = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = latency["torch_fp32"].median_ms
    nncf, nncf_bf16 = latency.get(NNCF_DEFAULT), latency.get(NNCF_DEFAULT_BF16)
    rows = []
    for name, v in variants.items():
        a, b = fid[name]["heldout_seed0"], fid[name]["heldout_seed1"]
        rows.append({
            "variant": name, "how": v["how"], "cos_mean": a.cos_mean, "cos_min": a.cos_min,
            "nn_agreement": a.nn_agreement, "cos_mean_set2": b.cos_mean, "nn_agreement_set2": b.nn_agreement,
            "latency_median_ms": latency[name].median_ms, "latency_p95_ms": latency[name].p95_ms,
            "speedup": base / latency[name].median_ms, "tokens_run": latency[name].tokens_run,
            "export_s": v.get("export_s"), "recipe": v.get("recipe"),
            "latency_samples_ms": list(latency[name].samples_ms),
            "latency_ratio_to_nncf_default": None if nncf is None else paired_ratio(
                latency[name].samples_ms, nncf.samples_ms).to_dict(),
            "latency_ratio_to_nncf_default_bf16": None if nncf_bf16 is None else paired_ratio(
                latency[name].samples_ms, nncf_bf16.samples_ms).to_dict(),
        })
    loaded = load_is_high(load_start[0], load_timing[0], load_end[0])
    doc = {
        "bench": "runtimes", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/runtimes.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": _machine(),
        "load_average": {"start": load_start, "before_timing": load_timing, "end": load_end,
                         "high_load": loaded,
                         "note": "1-min load above the cores + 1: other jobs shared the CPU" if loaded else "quiet"},
        "model": MODELS[args.model],
        "latency_how": latency["torch_fp32"].how + "; speedup = torch_fp32 median / variant median",
        "fidelity_how": f"{args.heldout} held-out docstrings of the default corpus (stdlib + numpy, scipy, torch, transformers, networkx; seed 0; *_set2: seed 1), mean-pooled embeddings "
                        "vs eager torch fp32; icd's int8 search used only the calibration texts",
        "variants": rows,
    }
    write_json_atomic(args.out, doc)
    print(f"{'variant':44} {'cos':>8} {'cos_min':>8} {'nn':>6} {'cos2':>8} {'nn2':>6} {'med_ms':>8} {'x':>6}"
          f"  {'/ nncf_default (95% CI)':>24}  {'/ nncf_default_bf16 (95% CI)':>24}")
    for r in rows:
        paired = [ratio_text(r[f"latency_ratio_to_{anchor}"]) for anchor in ("nncf_default", "nncf_default_bf16")]
        print(f"{r['variant']:44} {r['cos_mean']:8.5f} {r['cos_min']:8.5f} {r['nn_agreement']:6.3f} "
              f"{r['cos_mean_set2']:8.5f} {r['nn_agreement_set2']:6.3f} {r['latency_median_ms']:8.1f} "
              f"{r['speedup']:6.2f}  {paired[0]:>24}  {paired[1]:>24}")
    print(f"load average start / before timing / end: {load_start} / {load_timing} / {load_end} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
