"""int8 on CPU: fp32 vs plain torch dynamic int8 vs icd's int8 schemes, on real MiniLM-L6 weights.

Fidelity: mean-pooled embeddings of held-out docstrings of icd's default corpus (stdlib + numpy, scipy, torch,
transformers, networkx; never the calibration texts) against the fp32 model (cos mean / min, nearest-neighbour
agreement); deterministic. Latency:
``icd.measure.latency.measure_latency_interleaved`` at batch 8x128 with fixed torch threads: every variant runs once
per round, round after round, in this one process, so that load from other processes falls on all of them alike.
Writes ``bench/results/int8.json`` and prints a table.

Usage: ``.venv/bin/python bench/int8.py [--threads 2 1] [--runs 12] [--variants NAME ...]``
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icd.config.schema import ModelSection
from icd.data.corpus import load_split
from icd.io.atomic import write_json_atomic
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.measure.latency import measure_latency_interleaved
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext
from icd.transforms.configs import Int8Config
from icd.transforms.int8 import prepare_int8_runtime
from icd.transforms.int8_kernels import vnni_supported
from icd.transforms.runtime import apply_runtime_transforms_

RESULT = Path(__file__).parent / "results" / "int8.json"

ICD_VARIANTS: dict[str, tuple[Callable[[], Int8Config], str]] = {
    "icd_per_channel_7bit": (
        lambda: Int8Config(qscheme="per_channel", reduce_range=True),
        "previous icd default: per-channel weights, one 7-bit activation range per call, smoothing"),
    "icd_per_channel_8bit": (lambda: Int8Config(qscheme="per_channel", reduce_range=False),
                             "per-channel weights, one 8-bit activation range per call, smoothing"),
    "icd_per_token_all": (lambda: Int8Config(qscheme="per_token", per_token_scope="all"),
                          "per-token 8-bit activations on every Linear, smoothing"),
    "icd_per_token_all_no_smoothing": (
        lambda: Int8Config(qscheme="per_token", per_token_scope="all", smooth_alpha=None),
        "per-token 8-bit activations on every Linear, no smoothing"),
    "icd_int8": (Int8Config, "Int8Config() defaults: per-token activations on the 6 FFN-out Linears, one 8-bit range "
                             "per call elsewhere, smoothing"),
    "icd_per_token_max3": (lambda: Int8Config(per_token_max=3),
                           "the default with per-token activations on at most 3 FFN-out Linears (by layer error)"),
    "icd_per_token_max2": (lambda: Int8Config(per_token_max=2),
                           "the default with per-token activations on at most 2 FFN-out Linears (by layer error)"),
}
DEFAULT_VARIANTS = ("icd_per_channel_7bit", "icd_per_channel_8bit", "icd_per_token_all",
                    "icd_per_token_all_no_smoothing", "icd_int8")
"""What a plain run compares (bench/results/int8.json); the per_token_max variants are asked for by name."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="torch thread counts timed (first = headline)")
    parser.add_argument("--runs", type=int, default=12,
                        help="timed runs per variant (interleaved rounds) after warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first")
    parser.add_argument("--calibration", type=int, default=512, help="calibration texts (search only)")
    parser.add_argument("--heldout", type=int, default=256, help="held-out texts (fidelity only)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(ICD_VARIANTS),
                        help="icd variants (fp32 and torch_dynamic_int8 always run)")
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _torch_dynamic(fp32: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8)


def _build_variants(args: argparse.Namespace, fp32: Any, tokenizer: Any, calibration: list[str]) -> dict[str, dict]:
    variants: dict[str, dict] = {
        "fp32": {"model": fp32, "how": "fp32 reference", "search_s": None, "report": None},
        "torch_dynamic_int8": {"model": _torch_dynamic(fp32), "search_s": None, "report": None, "how": (
            "torch.ao.quantization.quantize_dynamic on every nn.Linear (per-tensor weights, 7-bit per-call activation "
            f"range, engine {torch.backends.quantized.engine})")},
    }
    for name in args.variants:
        make, how = ICD_VARIANTS[name]
        config = make()
        model = copy.deepcopy(fp32)
        context = TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32, max_length=128)
        start = time.perf_counter()
        record, report = prepare_int8_runtime(model, config, context)
        apply_runtime_transforms_(model, [record])
        seconds = time.perf_counter() - start
        report.pop("smoothing", None)
        report.pop("sensitivity_cos_drop_alone", None)
        variants[name] = {"model": model, "search_s": seconds, "report": report, "how": how,
                          "config": config.model_dump(mode="json")}
        print(f"[{name}] search {seconds:.1f} s, per-token Linears {len(report['per_token'])}, activation bits "
              f"{report['activation_bits']}, smoothed (runtime) {len(record['data']['input_scale_log2'])}, kept fp32: "
              f"{[k['name'] for k in report['kept_fp32']]}", flush=True)
    return variants


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    section = ModelSection()
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    variants = _build_variants(args, fp32, tokenizer, split.calibration)
    torch.set_num_threads(args.threads[0])
    reference = encode(fp32, tokenizer, split.heldout, 32, 128)
    fid = {name: fidelity(reference, encode(v["model"], tokenizer, split.heldout, 32, 128))
           for name, v in variants.items()}
    models = {name: v["model"] for name, v in variants.items()}
    timings, loads = {}, {}
    for threads in args.threads:
        before = os.getloadavg()
        timings[threads] = measure_latency_interleaved(models, 8, 128, warmup=args.warmup, runs=args.runs,
                                                       threads=threads)
        loads[threads] = {"before": before, "after": os.getloadavg()}
    rows = []
    for name, v in variants.items():
        row = {"variant": name, "how": v["how"], "cos_mean": fid[name].cos_mean, "cos_min": fid[name].cos_min,
               "nn_agreement": fid[name].nn_agreement}
        for threads, lat in timings.items():
            suffix = "" if threads == args.threads[0] else f"_{threads}t"
            row[f"latency_median_ms{suffix}"] = lat[name].median_ms
            row[f"latency_p95_ms{suffix}"] = lat[name].p95_ms
            row[f"speedup{suffix}"] = lat["fp32"].median_ms / lat[name].median_ms
            row[f"timed_runs{suffix}"] = lat[name].runs
        row.update(search_s=v["search_s"], config=v.get("config"), report=v["report"])
        rows.append(row)
    doc = {
        "bench": "int8", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "cpu_vnni": vnni_supported(), "torch": torch.__version__,
                    "quantized_engine": torch.backends.quantized.engine, "loadavg_during_timing": loads},
        "latency_how": next(iter(timings.values()))["fp32"].how + (
            f"; threads {args.threads} (first = headline, fields with _Nt: N threads); median / p95 over the runs"),
        "fidelity_how": f"{args.heldout} held-out docstrings of the default corpus (stdlib + numpy, scipy, torch, "
                        f"transformers, networkx; seed 0), mean-pooled embeddings vs fp32 (calibration texts "
                        f"({args.calibration}) used only by the search)",
        "command": "python bench/int8.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "variants": rows,
    }
    write_json_atomic(args.out, doc)
    extra = [f"_{t}t" for t in args.threads[1:]]
    print(f"{'variant':28} {'cos_mean':>9} {'cos_min':>9} {'nn_agr':>7} {'med_ms':>8} {'p95_ms':>8} {'speedup':>8}"
          + "".join(f" {'med_ms' + e:>11} {'speedup' + e:>11}" for e in extra))
    for r in rows:
        print(f"{r['variant']:28} {r['cos_mean']:9.5f} {r['cos_min']:9.5f} {r['nn_agreement']:7.3f} "
              f"{r['latency_median_ms']:8.1f} {r['latency_p95_ms']:8.1f} {r['speedup']:8.2f}"
              + "".join(f" {r['latency_median_ms' + e]:11.1f} {r['speedup' + e]:11.2f}" for e in extra))
    print(f"load average (1, 5, 15 min) during timing: {loads} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
