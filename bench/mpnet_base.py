"""Base-size real weights (all-mpnet-base-v2: MPNet, 12 layers x 768 x 3072, 110M parameters): int8 and 2:4.

Fidelity and in-process speed of icd's int8 (``Int8Config()`` defaults, as ``icd run`` applies it; and with
per-token activations everywhere plus 8 fp32 outlier channels per Linear; each also with GPTQ weight rounding) and of 2:4
sparsity (``NMSparsityConfig()`` defaults: FFN Linears, sequential SparseGPT with re-fit) on MPNet-base as the
embedding model it is (mean pooling). Fidelity: mean-pooled embeddings of held-out docstrings (default corpus) against fp32
(cos mean / min, nearest-neighbour agreement) on two disjoint held-out sets, never the calibration texts.
Latency: ``measure_latency_interleaved`` at batch 8x128, fixed torch threads, every variant once per round in
this one process. (The guide's command on these weights is timed by ``bench/optimizer.py --only guide``.)

Writes ``bench/results/mpnet_base.json`` (command, machine, UTC date, load average at start and end: BenchRecord).
Needs the checkpoint: ``icd models fetch mpnet-base`` (``make setup`` runs it).

Usage: ``.venv/bin/python bench/mpnet_base.py [--runs 8] [--threads 2] [--calibration 512] [--heldout 256]
[--variants NAME ...] [--out PATH]``
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from icd.calibrate.run import calibrate
from icd.config.schema import ModelSection
from icd.data.corpus import load_split
from icd.io.bench_result import BenchRecord
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.measure.latency import measure_latency_interleaved
from icd.model.fetch import CATALOG, MODELS_HOME
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import Int8Config, NMSparsityConfig
from icd.transforms.int8 import prepare_int8_runtime
from icd.transforms.int8_kernels import vnni_supported
from icd.transforms.runtime import apply_runtime_transforms_

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "mpnet_base.json"
CHECKPOINT = REPO / MODELS_HOME / CATALOG["mpnet-base"].folder


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (latency and the whole bench)")
    parser.add_argument("--runs", type=int, default=8, help="timed runs per variant (interleaved rounds)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=512, help="calibration texts of the transforms")
    parser.add_argument("--heldout", type=int, default=256, help="texts per held-out set (two disjoint sets)")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help=f"build only these (of {', '.join(n for n, _, _ in INT8_VARIANTS)}, {SPARSE}); "
                             "default all; fp32 is always the reference")
    return parser.parse_args(argv)


FFN_OUT = r"^encoder\.layer\.\d+\.output\.dense$"
"""MPNet's FFN output Linears (its attention output is ``attention.attn.o``)."""
LATE_FFN_OUT = r"^encoder\.layer\.([6-9]|1[01])\.output\.dense$"

INT8_VARIANTS = [
    ("icd_int8", Int8Config(), "Int8Config() defaults (icd's int8 as `icd run` applies it)"),
    ("icd_int8_fp32_channels", Int8Config(per_token_scope="all", outlier_channels=8),
     "Int8Config(per_token_scope='all', outlier_channels=8): per-token activations on every Linear, and per "
     "Linear the 8 input channels with the widest calibration range (after smoothing) multiplied in fp32"),
    ("icd_int8_gptq", Int8Config(weight_rounding="gptq"),
     "Int8Config(weight_rounding='gptq'): the defaults with GPTQ weight rounding (Hessians of the 512 calibration "
     "texts)"),
    ("icd_int8_gptq_fp32_channels", Int8Config(per_token_scope="all", outlier_channels=8, weight_rounding="gptq"),
     "Int8Config(per_token_scope='all', outlier_channels=8, weight_rounding='gptq'): per-token activations on every "
     "Linear, 8 fp32 outlier channels per Linear, GPTQ weight rounding"),
    ("icd_int8_gptq_ffn_out_fp32", Int8Config(per_token_scope="all", outlier_channels=8, weight_rounding="gptq",
                                              keep_fp32=[FFN_OUT]),
     "as icd_int8_gptq_fp32_channels, with the 12 FFN output Linears (output.dense) kept fp32: 60 of 72 Linears "
     "int8"),
    ("icd_int8_gptq_late_ffn_out_fp32", Int8Config(per_token_scope="all", outlier_channels=8,
                                                   weight_rounding="gptq", keep_fp32=[LATE_FFN_OUT]),
     "as icd_int8_gptq_fp32_channels, with the FFN output Linears of layers 6-11 kept fp32: 66 of 72 Linears int8"),
]
"""The int8 variants built (name, config, how)."""

SPARSE = "icd_2of4_ffn"
"""The 2:4 variant's name."""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _build(fp32: torch.nn.Module, tokenizer: Any, calibration: list[str],
           wanted: set[str]) -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {"fp32": {"model": fp32, "build_s": None, "how": "fp32 reference"}}
    started = time.perf_counter()
    # what `icd run` gives int8: the calibration statistics of the model (activation ranges, GPTQ's Hessians)
    stats = calibrate(fp32, tokenizer, calibration, 32, 128, progress=False)
    variants["fp32"]["calibration_s"] = time.perf_counter() - started
    print(f"[calibration] {variants['fp32']['calibration_s']:.0f} s", flush=True)
    context = TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32, max_length=128,
                               stats=stats)
    sparse_context = TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32,
                                      max_length=128)
    for name, config, how in INT8_VARIANTS:
        if name not in wanted:
            continue
        int8 = copy.deepcopy(fp32)
        started = time.perf_counter()
        record, report = prepare_int8_runtime(int8, config, context)
        apply_runtime_transforms_(int8, [record])
        variants[name] = {"model": int8, "build_s": time.perf_counter() - started, "how": how,
                          "config": config.model_dump(mode="json"),
                          "report": {k: v for k, v in report.items() if k not in ("smoothing",
                                                                                   "sensitivity_cos_drop_alone")}}
        print(f"[{name}] built in {variants[name]['build_s']:.0f} s", flush=True)
    if SPARSE not in wanted:
        return variants
    sparse = copy.deepcopy(fp32)
    started = time.perf_counter()
    optimize_(sparse, NMSparsityConfig(), sparse_context)
    variants[SPARSE] = {"model": sparse, "build_s": time.perf_counter() - started,
                                "how": "NMSparsityConfig() defaults: 2:4 on the FFN Linears, dense kernels (the "
                                       "zeros are stored; no sparse kernel runs on this CPU)",
                                "config": NMSparsityConfig().model_dump(mode="json")}
    print(f"[{SPARSE}] built in {variants[SPARSE]['build_s']:.0f} s", flush=True)
    return variants


def transforms(args: argparse.Namespace) -> dict[str, Any]:
    """int8 and 2:4 on MPNet-base (embedding): fidelity on two held-out sets, interleaved latency."""
    section = ModelSection(path=str(CHECKPOINT), task="embedding")
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, 2 * args.heldout, seed=0)
    sets = {"heldout_a": split.heldout[: args.heldout], "heldout_b": split.heldout[args.heldout:]}
    before_build = _load()
    known = [n for n, _, _ in INT8_VARIANTS] + [SPARSE]
    variants = _build(fp32, tokenizer, split.calibration, set(args.variants or known))
    references = {name: encode(fp32, tokenizer, texts, 32, 128) for name, texts in sets.items()}
    fid = {v: {s: fidelity(references[s], encode(variant["model"], tokenizer, texts, 32, 128))
               for s, texts in sets.items()} for v, variant in variants.items()}
    before = _load()
    timings = measure_latency_interleaved({k: v["model"] for k, v in variants.items()}, 8, 128,
                                          warmup=args.warmup, runs=args.runs, threads=args.threads)
    after = _load()
    rows = []
    for name, variant in variants.items():
        row: dict[str, Any] = {"variant": name, "how": variant["how"]}
        for set_name, f in fid[name].items():
            row[set_name] = {"cos_mean": f.cos_mean, "cos_min": f.cos_min, "nn_agreement": f.nn_agreement,
                             "texts": f.count}
        lat = timings[name]
        row.update(latency_median_ms=lat.median_ms, latency_p95_ms=lat.p95_ms,
                   speedup=timings["fp32"].median_ms / lat.median_ms, timed_runs=lat.runs,
                   build_s=variant["build_s"], calibration_s=variant.get("calibration_s"),
                   config=variant.get("config"), report=variant.get("report"))
        rows.append(row)
    int8_names = {name for name, _, _ in INT8_VARIANTS}
    targets = {row["variant"]: {s: {"cos_mean": row[s]["cos_mean"] >= 0.999,
                                    "nn_agreement": row[s]["nn_agreement"] >= 0.97} for s in sets}
               for row in rows if row["variant"] in int8_names}
    return {
        "model": f"{CHECKPOINT.relative_to(REPO)} (all-mpnet-base-v2, MPNet, 12x768x3072, 110M parameters), "
                 "task embedding (mean pooling)",
        "build_how": "the int8 variants are built from one calibration of the fp32 model (as `icd run` gives them: "
                     "activation ranges and GPTQ's Hessians; its time is fp32's calibration_s, not in any build_s); "
                     "2:4 runs its own sequential passes",
        "fidelity_how": f"two disjoint sets of {args.heldout} held-out docstrings of the default corpus (stdlib + numpy, scipy, torch, transformers, networkx; seed 0), mean-pooled "
                        f"embeddings vs fp32; {args.calibration} calibration texts used only to build the variants",
        "latency_how": timings["fp32"].how,
        "int8_target": "cos_mean >= 0.999 and nn_agreement >= 0.97 on held-out texts",
        "int8_target_met": targets,
        "variants": rows,
        "load_average_timing": {"before_build": before_build, "before": before, "after": after},
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    unknown = sorted(set(args.variants or ()) - {n for n, _, _ in INT8_VARIANTS} - {SPARSE})
    if unknown:
        print(f"--variants: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not (CHECKPOINT / "config.json").is_file():
        print(f"{CHECKPOINT} missing: run `icd models fetch mpnet-base` (make setup does)", file=sys.stderr)
        return 2
    record = BenchRecord.start(argv)
    torch.set_num_threads(args.threads)
    figures = transforms(args)
    for row in figures["variants"]:
        a, b = row["heldout_a"], row["heldout_b"]
        print(f"{row['variant']:14} cos {a['cos_mean']:.5f}/{b['cos_mean']:.5f} min {a['cos_min']:.4f}/"
              f"{b['cos_min']:.4f} NN {a['nn_agreement']:.3f}/{b['nn_agreement']:.3f} "
              f"{row['latency_median_ms']:.0f} ms x{row['speedup']:.2f}", flush=True)
    doc = record.write(args.out, {"bench": "mpnet_base", "torch_threads": args.threads, "cpu_vnni": vnni_supported(),
                                  "quantized_engine": torch.backends.quantized.engine, **figures})
    print(f"load average {doc['load_average']} (high: {doc['load_high']}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
