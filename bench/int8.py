"""int8 on CPU: fp32 vs plain torch dynamic int8 vs icd's faithful int8, on real MiniLM-L6 weights.

Fidelity: mean-pooled embeddings of held-out stdlib docstrings (never the calibration texts) against the fp32
model (cos mean / min, nearest-neighbour agreement). Latency: ``icd.measure.latency.measure_latency`` at batch
8x128 with fixed torch threads; the variants are timed in interleaved rounds so that load from other processes on
the machine falls on all of them alike. Writes ``bench/results/int8.json`` and prints a table.

Usage: ``.venv/bin/python bench/int8.py [--threads 2] [--rounds 6] [--runs-per-round 2]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icd.config.schema import ModelSection
from icd.data.corpus import load_split
from icd.io.atomic import write_json_atomic
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.measure.latency import measure_latency
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext
from icd.transforms.configs import Int8Config
from icd.transforms.int8 import QScheme, linear_names, prepare_int8_runtime, quantize_linears_
from icd.transforms.runtime import apply_runtime_transforms_

RESULT = Path(__file__).parent / "results" / "int8.json"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch thread counts timed (first = headline)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    parser.add_argument("--runs-per-round", type=int, default=2, help="timed runs per variant per round")
    parser.add_argument("--calibration", type=int, default=512, help="calibration texts (search only)")
    parser.add_argument("--heldout", type=int, default=256, help="held-out texts (fidelity only)")
    parser.add_argument("--keep", type=int, default=2, help="auto_keep_fp32 of the second icd variant (0: skip it)")
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _build_variants(args: argparse.Namespace, fp32: Any, tokenizer: Any, calibration: list[str]) -> dict[str, dict]:
    variants: dict[str, dict] = {"fp32": {"model": fp32, "how": "fp32 reference", "search_s": None, "report": None}}
    plain = copy.deepcopy(fp32)
    quantize_linears_(plain, linear_names(plain), QScheme.PER_TENSOR, engine=None)
    variants["torch_dynamic_int8"] = {"model": plain, "search_s": None, "report": None, "how": (
        f"quantize_dynamic, qint8 per-tensor weights, all 36 Linears, default engine {torch.backends.quantized.engine}")}
    ablation = copy.deepcopy(fp32)
    quantize_linears_(ablation, linear_names(ablation), QScheme.PER_CHANNEL, engine="onednn")
    variants["per_channel_onednn_no_smoothing"] = {"model": ablation, "search_s": None, "report": None,
                                                   "how": "ablation: per-channel qint8 weights, onednn, no smoothing"}
    configs = {"icd_int8": Int8Config()}
    if args.keep > 0:
        configs[f"icd_int8_keep{args.keep}"] = Int8Config(auto_keep_fp32=args.keep, cos_target=0.998)
    for name, config in configs.items():
        model = copy.deepcopy(fp32)
        context = TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32, max_length=128)
        start = time.perf_counter()
        record, report = prepare_int8_runtime(model, config, context)
        apply_runtime_transforms_(model, [record])
        seconds = time.perf_counter() - start
        report.pop("smoothing", None)
        variants[name] = {"model": model, "search_s": seconds, "report": report, "config": config.model_dump(mode="json"),
                          "how": "per-channel int8 weights + smoothing (alpha per Linear by measured int8 output error on "
                                 "calibration text; V->O folded) + measured fp32 exceptions"}
        print(f"[{name}] search {seconds:.1f} s, kept fp32: {[k['name'] for k in report['kept_fp32']]}", flush=True)
    return variants


def _time_interleaved(variants: dict[str, dict], args: argparse.Namespace, threads: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for name, v in variants.items():  # warm-up once each
        measure_latency(v["model"], 8, 128, warmup=2, runs=1, threads=threads)
    for _ in range(args.rounds):
        for name, v in variants.items():
            lat = measure_latency(v["model"], 8, 128, warmup=0, runs=args.runs_per_round, threads=threads)
            samples[name].extend(lat.samples_ms)
    return samples


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    section = ModelSection()
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    load_before = os.getloadavg()
    variants = _build_variants(args, fp32, tokenizer, split.calibration)
    torch.set_num_threads(args.threads[0])
    reference = encode(fp32, tokenizer, split.heldout, 32, 128)
    fid = {name: fidelity(reference, encode(v["model"], tokenizer, split.heldout, 32, 128)) for name, v in variants.items()}
    timings = {threads: _time_interleaved(variants, args, threads) for threads in args.threads}
    rows = []
    for name, v in variants.items():
        row = {"variant": name, "how": v["how"], "cos_mean": fid[name].cos_mean, "cos_min": fid[name].cos_min,
               "nn_agreement": fid[name].nn_agreement}
        for threads, samples in timings.items():
            median, fp32_median = float(np.median(samples[name])), float(np.median(samples["fp32"]))
            suffix = "" if threads == args.threads[0] else f"_{threads}t"
            row[f"latency_median_ms{suffix}"] = median
            row[f"latency_p95_ms{suffix}"] = float(np.percentile(samples[name], 95))
            row[f"speedup{suffix}"] = fp32_median / median
            row[f"timed_runs{suffix}"] = len(samples[name])
        row.update(search_s=v["search_s"], config=v.get("config"), report=v["report"])
        rows.append(row)
    doc = {
        "bench": "int8", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "quantized_engine": torch.backends.quantized.engine,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "latency_how": (f"measure_latency, batch 8x128 random token ids, {args.threads[0]} threads (fields with _Nt: "
                        f"N threads), {args.rounds} interleaved rounds x {args.runs_per_round} runs after warm-up; "
                        "median/p95 over all runs"),
        "fidelity_how": f"{args.heldout} held-out stdlib docstrings, mean-pooled embeddings vs fp32 (calibration texts "
                        "used only by the search)",
        "command": "python bench/int8.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "variants": rows,
    }
    write_json_atomic(args.out, doc)
    extra = [f"_{t}t" for t in args.threads[1:]]
    print(f"{'variant':32} {'cos_mean':>9} {'cos_min':>9} {'nn_agr':>7} {'med_ms':>8} {'p95_ms':>8} {'speedup':>8}"
          + "".join(f" {'med_ms' + e:>11} {'speedup' + e:>11}" for e in extra))
    for r in rows:
        print(f"{r['variant']:32} {r['cos_mean']:9.5f} {r['cos_min']:9.5f} {r['nn_agreement']:7.3f} "
              f"{r['latency_median_ms']:8.1f} {r['latency_p95_ms']:8.1f} {r['speedup']:8.2f}"
              + "".join(f" {r['latency_median_ms' + e]:11.1f} {r['speedup' + e]:11.2f}" for e in extra))
    print(f"load average before/after: {load_before} / {doc['machine']['loadavg_after']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
