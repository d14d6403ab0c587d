"""Benchmark (not a test): correlation-matrix compression (``icd compress``, icd/ops/compress.py).

1. **Method choice** — on synthetic block-structured |corrcoef| matrices (n channels in hidden groups of 32,
   shuffled; samples = group factor + noise), at ``--ratio`` of the dense values kept: global top-k entries,
   per-row top-k entries (symmetrised) and icd's low-rank factors (float16). Each is scored by
   :func:`icd.ops.compress.objective_ratio`: the locality gain a permutation solved from the compressed matrix
   reaches on the original, over the gain solved from the original (1.0 = as good).
2. **A real run** — ``icd run`` (configs/minilm.json, linear, permutations only, dims hidden + ffn: the 7 matrices
   an export of it ships) then :func:`icd.ops.compress.compress_file` with validation on its
   ``correlation_matrix.npz``: bytes before, bytes of the compressed file (kept only if validation passes), the
   worst objective ratio and the outcome.

Writes bench/results/compression.json (command, machine, date, load average).

Usage: .venv/bin/python bench/compression.py [--ratio 0.1] [--seeds 3] [--time-limit 0.5]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from icd.config import load_config
from icd.io.bench_result import BenchRecord
from icd.ops.compress import compress_arrays, compress_file, low_rank, objective_ratio, rank_for, reconstruct
from icd.pipeline.runner import run_config

ROOT = Path(__file__).resolve().parents[1]
GROUP = 32
RUN_OVERRIDES = ["pipeline.mode=linear", "transforms=[]", 'pipeline.dims=["hidden","ffn"]',
                 "measure.latency.runs=1", "measure.latency.warmup=0"]


def synthetic_correlation(n: int, seed: int, samples: int = 2048) -> np.ndarray:
    """|corrcoef| of n channels in hidden groups of ``GROUP`` (shuffled order): group factor + unit noise."""
    rng = np.random.default_rng(seed)
    groups = rng.permutation(np.arange(n) // GROUP)
    factors = rng.normal(size=(samples, groups.max() + 1))
    x = factors[:, groups] * rng.uniform(0.5, 1.5, size=n) + rng.normal(size=(samples, n))
    return np.abs(np.corrcoef(x, rowvar=False))


def keep_global_top_k(dense: np.ndarray, ratio: float) -> np.ndarray:
    """The largest ``ratio``·n² entries (ties kept), others zero."""
    k = max(1, int(ratio * dense.size))
    threshold = np.partition(dense.ravel(), -k)[-k]
    return np.where(dense >= threshold, dense, 0.0)


def keep_row_top_k(dense: np.ndarray, ratio: float) -> np.ndarray:
    """Each row's largest ``ratio``·n entries, symmetrised by the maximum."""
    k = max(1, int(ratio * dense.shape[0]))
    cols = np.argpartition(-dense, k - 1, axis=1)[:, :k]
    kept = np.zeros_like(dense)
    rows = np.arange(dense.shape[0])[:, None]
    kept[rows, cols] = dense[rows, cols]
    return np.maximum(kept, kept.T)


def keep_low_rank(dense: np.ndarray, ratio: float) -> np.ndarray:
    values, vectors = low_rank(dense, rank_for(dense.shape[0], ratio))
    return reconstruct(values, vectors)


METHODS = {"global_top_k": keep_global_top_k, "row_top_k": keep_row_top_k, "low_rank": keep_low_rank}


def bench_methods(n: int, ratio: float, seeds: int, time_limit_s: float) -> dict:
    scores: dict[str, list[float]] = {name: [] for name in METHODS}
    for seed in range(seeds):
        dense = synthetic_correlation(n, seed)
        for name, method in METHODS.items():
            scores[name].append(round(objective_ratio(dense, method(dense, ratio), time_limit_s), 4))
    return {"matrix": f"synthetic block-structured {n}x{n} |corrcoef|, groups of {GROUP}", "ratio": ratio,
            "seeds": seeds, "time_limit_s": time_limit_s,
            "objective_ratio": {name: {"mean": round(float(np.mean(v)), 3), "per_seed": v}
                                for name, v in scores.items()}}


def bench_run(ratio: float, time_limit_s: float) -> dict:
    cfg = load_config(ROOT / "configs" / "minilm.json", RUN_OVERRIDES)
    with tempfile.TemporaryDirectory(prefix="icd-bench-") as tmp:
        run = Path(tmp) / "run"
        run_config(cfg, run, progress=False)
        target = Path(tmp) / "correlation_matrix.npz"
        shutil.copy2(run / "correlation_matrix.npz", target)
        with np.load(target, allow_pickle=False) as data:
            compressed, _ = compress_arrays({name: data[name] for name in data.files}, ratio)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **compressed)
        result = compress_file(target, ratio, validate=True, time_limit_s=time_limit_s)
    compressed_bytes = buffer.tell()
    return {"run": {"config": "configs/minilm.json", "overrides": RUN_OVERRIDES}, "ratio": ratio,
            "time_limit_s": time_limit_s, "matrices": len(result.ratios), "bytes_before": result.bytes_before,
            "compressed_bytes": compressed_bytes,
            "compressed_percent": round(100 * compressed_bytes / result.bytes_before, 2),
            "bytes_after": result.bytes_after,
            "worst_objective_ratio": round(result.worst_ratio, 4) if result.worst_ratio is not None else None,
            "objective_ratio": {name: round(v, 4) for name, v in result.ratios.items()}, "status": result.status.value}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--n", type=int, default=384, help="channels of the synthetic matrices")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=0.5, help="refinement cap per solve, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compression.json")
    args = parser.parse_args(argv)
    record = BenchRecord.start(None if argv is None else ["bench/compression.py", *argv])
    console = Console()
    methods = bench_methods(args.n, args.ratio, args.seeds, args.time_limit)
    table = Table(title=f"objective ratio at {args.ratio:g} of the values ({methods['matrix']}, {args.seeds} seeds)")
    table.add_column("method")
    table.add_column("mean", justify="right")
    for name, score in methods["objective_ratio"].items():
        table.add_row(name, f"{score['mean']:.3f}")
    console.print(table)
    real = bench_run(args.ratio, args.time_limit)
    console.print(f"real run: {real['matrices']} matrices, {real['bytes_before']:,} bytes, compressed "
                  f"{real['compressed_bytes']:,}, worst objective ratio {real['worst_objective_ratio']}: "
                  f"{real['status']}")
    doc = record.write(args.out, {"methods": methods, "real_run": real})
    console.print(f"wrote {args.out} (load average {doc['load_average']['start']} -> {doc['load_average']['end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
