"""How much "× NNCF int8" moves between processes: the speed anchor of #13 and #15 timed in fresh processes.

The compaction and runtime benches time every model in one interleaved run in one process and state speeds as
ratios to OpenVINO + NNCF int8 of the full model (``nncf_default``). Across runs of the same models that anchor
moved from 47 to 62 ms while icd's fused models moved less, so a ratio measured in one process can be a property
of that process. This bench exports each model once, then times the same exported folders in ``--processes``
fresh processes, one after another, under three conditions in turn:

* ``openvino_only`` — one process compiles every exported model (in its own shuffled order) and times them
  interleaved (``icd.measure.latency.measure_latency_interleaved``);
* ``with_torch_fp32`` — the same with torch fp32 in the rounds (torch's OpenMP threads and OpenVINO's threads then
  take turns on the cores, as in the compaction bench before 2026-12-01);
* ``alone`` — each model in a process of its own, one after another in a shuffled order (what a model served by
  Triton, one per process, sees; no rounds to pair, so machine load can differ between the models).

Per process (group of processes for ``alone``) and variant: median ms and the ratio to NNCF int8 (interleaved:
median of the per-round ratios and its 95 % bootstrap interval; alone: the ratio of the medians, bootstrap
resampling each model's samples). Across processes: the spread of NNCF int8's median and of each ratio (min,
median, max), by condition, and the Spearman correlation between a process's NNCF int8 median and the variant's
ratio there (positive: the variant gains on NNCF int8 in the slower processes). Fidelity of each exported model
(cos mean / NN agreement against torch fp32 on the held-out texts) is measured once, in this process.

Variants (MiniLM): OpenVINO fp32, int8 with each ``--recipes`` recipe of the full model, and for each budget B
of ``--compact`` the model compacted to B of its FLOPs (``CompactConfig(budget=B)``, the calibration texts) with
each of ``--compact-recipe``'s recipes (comma-separated; and with ``--ffn-multiples`` M > 1, the same budget with
every FFN size a multiple of M: ``compact74_m64``).

Writes ``bench/results/anchor_spread.json`` and ``anchor_spread.png`` beside it (per-process ratios).

Usage:
    .venv/bin/python bench/anchor_spread.py [--processes 9] [--runs 30] [--compact 0.95,0.88] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap, spearmanr

from icd.data.corpus import load_split
from icd.io.bench_result import BenchRecord, load_average, package_versions
from icd.measure.encode import encode
from icd.measure.fidelity import fidelity
from icd.measure.latency import PairedRatio, measure_latency_interleaved, paired_ratio
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import CompactConfig

RESULT = Path(__file__).parent / "results" / "anchor_spread.json"
ANCHOR = "openvino_int8_nncf_default"
CONDITIONS = ("openvino_only", "with_torch_fp32", "alone")
TORCH = "torch_fp32"
STYLE = {"openvino_only": ("tab:blue", -0.2), "with_torch_fp32": ("tab:orange", 0.0), "alone": ("tab:green", 0.2)}
"""Plot colour and x offset of each condition."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--processes", type=int, default=9,
                        help="timings in fresh processes, the conditions in turn (alone: one process per variant)")
    parser.add_argument("--runs", type=int, default=30, help="timed interleaved rounds per process")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--recipes", default="nncf_default,icd_outliers,icd_outliers_fused",
                        help="OpenVINO int8 recipes of the full model (nncf_default: the anchor, required)")
    parser.add_argument("--compact", default="0.95,0.88",
                        help="comma-separated FLOPs budgets of compacted variants (0: none)")
    parser.add_argument("--compact-recipe", default="icd_outliers_fused",
                        help="comma-separated OpenVINO int8 recipes the compacted models are exported with")
    parser.add_argument("--ffn-multiples", default="1",
                        help="comma-separated: each budget is also compacted with its FFN sizes rounded to each "
                             "multiple (CompactConfig.ffn_multiple; 1: no rounding)")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _child(manifest_path: Path) -> int:
    """Time the manifest's folders (and torch fp32 when asked) in this fresh process; samples as JSON on stdout."""
    from icd.runtimes.registry import get_runtime

    manifest = json.loads(manifest_path.read_text())
    threads = manifest["threads"]
    torch.set_num_threads(threads)
    runtime = get_runtime("openvino")
    models: dict[str, Any] = {}
    for name in manifest["compile_order"]:
        models[name] = runtime.load(Path(manifest["folders"][name]), threads)
    if manifest["with_torch"]:
        from compaction import model_section

        models[TORCH] = load_encoder(model_section(manifest["model"]))
    latency = measure_latency_interleaved(models, 8, 128, manifest["warmup"], manifest["runs"], threads,
                                          seed=manifest["seed"])
    print(json.dumps({name: list(lat.samples_ms) for name, lat in latency.items()}))
    return 0


def _export(args, fp32, tokenizer, calibration: list[str], work: Path) -> dict[str, Path]:
    """Every variant exported once under ``work``: ``{variant: folder}``."""
    from compaction import Runtimes

    recipes = tuple(r for r in args.recipes.split(",") if r)
    runtimes = Runtimes(tokenizer, calibration, 128, args.threads, work, nncf_recipes=recipes)
    folders = dict(runtimes.export(fp32, "full", runtimes.int8_record(fp32)))
    runtimes.nncf_recipes = tuple(r for r in args.compact_recipe.split(",") if r)
    multiples = [int(m) for m in args.ffn_multiples.split(",") if m.strip()]
    for budget, multiple in [(b, m) for b in _budgets(args.compact) for m in multiples]:
        compacted = copy.deepcopy(fp32)
        optimize_(compacted, CompactConfig(budget=budget, ffn_multiple=multiple),
                  TransformContext(tokenizer=tokenizer, calibration_texts=calibration, batch_size=32, max_length=128))
        name = f"compact{int(round(budget * 100))}" + (f"_m{multiple}" if multiple > 1 else "")
        for suffix, folder in runtimes.export(compacted, name, runtimes.int8_record(compacted)).items():
            if "int8" in suffix:
                folders[f"{name}+{suffix}"] = folder
    return folders


def _budgets(text: str) -> list[float]:
    """``--compact``'s FLOPs budgets (none for "" or "0")."""
    return [float(b) for b in text.split(",") if b.strip() and float(b) > 0]


def _fidelity(folders: dict[str, Path], fp32, tokenizer, heldout: list[str], threads: int) -> dict[str, Any]:
    from icd.runtimes.registry import get_runtime

    runtime = get_runtime("openvino")
    ref = encode(fp32, tokenizer, heldout, 32, 128)
    out = {}
    for name, folder in folders.items():
        fid = fidelity(ref, encode(runtime.load(folder, threads), tokenizer, heldout, 32, 128))
        out[name] = {"cos_mean": round(fid.cos_mean, 5), "nn_agreement": round(fid.nn_agreement, 4)}
    return out


def _run_child(manifest: dict[str, Any], path: Path) -> dict[str, list[float]]:
    """One fresh timing process on ``manifest`` (written to ``path``): ``{variant: samples_ms}``."""
    path.write_text(json.dumps(manifest))
    done = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).parent)
    if done.returncode != 0:
        raise SystemExit(f"timing process {path.stem} failed (rc {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _time_process(index: int, folders: dict[str, Path], args, work: Path) -> dict[str, Any]:
    """Process ``index`` of its condition: every variant interleaved in one process (``openvino_only``,
    ``with_torch_fp32``), or each variant alone in a process of its own, one after another (``alone``)."""
    condition = CONDITIONS[index % len(CONDITIONS)]
    order = list(folders)
    random.Random(index).shuffle(order)
    base = {"folders": {name: str(folder) for name, folder in folders.items()}, "model": args.model,
            "threads": args.threads, "warmup": args.warmup, "runs": args.runs, "seed": index, "with_torch": False}
    load_before = load_average()
    if condition == "alone":
        samples = {}
        for name in order:
            samples.update(_run_child({**base, "compile_order": [name]}, work / f"process{index}_{name}.json"))
    else:
        samples = _run_child({**base, "compile_order": order, "with_torch": condition == "with_torch_fp32"},
                             work / f"process{index}.json")
    anchor = samples[ANCHOR]
    ratio_to = _ratio_alone if condition == "alone" else paired_ratio
    variants = {}
    for name, values in samples.items():
        ratio = ratio_to(anchor, values)
        variants[name] = {"median_ms": round(float(np.median(values)), 2),
                          "speed_vs_nncf_int8": {"median": round(ratio.median, 3), "low": round(ratio.low, 3),
                                                 "high": round(ratio.high, 3)}}
    return {"process": index, "condition": condition, "order": order, "load_average_before": load_before,
            "load_average_after": load_average(), "variants": variants}


def _ratio_alone(anchor_ms: list[float], row_ms: list[float]) -> PairedRatio:
    """NNCF int8's median over the row's, timed in separate processes (no rounds to pair): the ratio of the two
    medians and its 95 % percentile-bootstrap interval, the samples resampled independently."""
    a, b = np.asarray(anchor_ms, dtype=float), np.asarray(row_ms, dtype=float)
    median = float(np.median(a) / np.median(b))
    if np.array_equal(a, b):
        return PairedRatio(median, median, median, 0.95, int(a.size))
    ci = bootstrap((a, b), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis), paired=False,
                   vectorized=True, confidence_level=0.95, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return PairedRatio(median, float(ci.low), float(ci.high), 0.95, int(a.size))


def _spread(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per condition (and all processes): min / median / max over processes of each variant's median ms and
    ratio to NNCF int8."""
    out: dict[str, Any] = {}
    for condition in (*CONDITIONS, "all"):
        chosen = [p for p in processes if condition in ("all", p["condition"])]
        if not chosen:
            continue
        names = sorted({name for p in chosen for name in p["variants"]})
        summary = {}
        for name in names:
            ms = [p["variants"][name]["median_ms"] for p in chosen if name in p["variants"]]
            ratio = [p["variants"][name]["speed_vs_nncf_int8"]["median"] for p in chosen if name in p["variants"]]
            summary[name] = {"median_ms": _three(ms), "speed_vs_nncf_int8": _three(ratio)}
            if name != ANCHOR and len(ratio) > 2:  # a rank correlation needs three processes that ran the variant
                anchor_ms = [p["variants"][ANCHOR]["median_ms"] for p in chosen if name in p["variants"]]
                summary[name]["spearman_ratio_vs_anchor_ms"] = round(float(spearmanr(anchor_ms, ratio)[0]), 3)
        out[condition] = {"processes": len(chosen), "variants": summary}
    return out


def _three(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(float(np.median(values)), 3), "max": round(max(values), 3)}


def _plot(processes: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in processes[0]["variants"] if n != ANCHOR]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for x, name in enumerate(names):
        for p in processes:
            ratio = p["variants"][name]["speed_vs_nncf_int8"]
            color, offset = STYLE[p["condition"]]
            ax.errorbar(x + offset, ratio["median"], yerr=[[ratio["median"] - ratio["low"]],
                        [ratio["high"] - ratio["median"]]], fmt="o", color=color, alpha=0.7, capsize=2)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("speed vs NNCF int8 (x, > 1 faster)")
    ax.set_title(title, fontsize=9)
    for condition, (color, _) in STYLE.items():
        ax.plot([], [], "o", color=color, label=condition)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child is not None:
        return _child(args.child)
    if "nncf_default" not in args.recipes.split(","):
        print("--recipes: nncf_default (the anchor) is required", file=sys.stderr)
        return 2
    if args.processes < len(CONDITIONS) or args.runs < 5:
        print(f"--processes must be >= {len(CONDITIONS)} (one per condition) and --runs >= 5, got {args.processes} "
              f"and {args.runs}", file=sys.stderr)
        return 2
    from compaction import model_section

    record = BenchRecord.start(argv)
    torch.set_num_threads(args.threads)
    section = model_section(args.model)
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    work = Path(tempfile.mkdtemp(prefix="icd-bench-anchor-"))
    try:
        folders = _export(args, fp32, tokenizer, split.calibration, work)
        fid = _fidelity(folders, fp32, tokenizer, split.heldout, args.threads)
        processes = []
        for index in range(args.processes):
            processes.append(_time_process(index, folders, args, work))
            anchor = processes[-1]["variants"][ANCHOR]["median_ms"]
            print(f"process {index} ({processes[-1]['condition']}): NNCF int8 {anchor} ms; "
                  + ", ".join(f"{n} {v['speed_vs_nncf_int8']['median']}x" for n, v in processes[-1]["variants"].items()
                              if n != ANCHOR), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    spread = _spread(processes)
    doc = record.write(args.out, {
        "bench": "anchor_spread", "model": args.model, "runtime_versions": package_versions(("openvino", "nncf", "transformers")),
        "threads": args.threads, "runs": args.runs,
        "calibration_texts": len(split.calibration), "heldout_texts": len(split.heldout),
        "latency_how": f"each process: the exported folders (alone: one folder) compiled in a shuffled order, then "
                       f"measure_latency_interleaved (batch 8x128 random token ids, {args.threads} threads, "
                       f"{args.warmup} warm-up + {args.runs} rounds, each model once per round, shuffled)",
        "ratio_how": "NNCF int8 latency / the variant's; interleaved conditions: round by round, median and 95 % "
                     "bootstrap interval; alone: ratio of the medians, 95 % bootstrap interval resampling each model's "
                     "samples independently; > 1 is faster",
        "fidelity": fid, "spread": spread, "processes": processes})
    _plot(processes, args.out.with_suffix(".png"),
          f"{args.model}: speed vs NNCF int8 in {args.processes} fresh processes, {args.runs} rounds each "
          f"(load {doc['load_average']['start'][0]} -> {doc['load_average']['end'][0]})")
    print(json.dumps(spread, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
