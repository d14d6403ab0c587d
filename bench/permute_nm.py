"""Benchmark of the N:M (2:4) column-permutation search (issue 8 §1). A benchmark, not a test.

Prints a table and writes bench/results/permute_nm.json:

(a) random 64×128 matrices (Pool & Yu, NeurIPS 2021, report 35.5% efficacy for stripe-group search);
(b) each of MiniLM-L6's 36 encoder Linear weights alone (scores |W|): efficacy per matrix, mean, min, and the
    wall time of searching all 36 (target: mean ≥ 30%, every one > 0, ≤ 60 s wall on this 2-core machine);
(c) a ceiling probe: layer 0's six Linears searched again with CEILING× their time limit, to show how much
    more time would buy (the local search's plateau on real weights);
(d) under the model's shared constraints: ONE hidden-dim permutation shared by the columns of Q, K, V and W1 of
    all 6 layers; per layer the FFN permutation (W2's columns; W1's rows follow it, which does not change W1's
    mask); per layer the vo permutation (attention output dense columns, only inside each head's block of 32).

Efficacy = (kept_permuted − kept_plain) / (kept_upper − kept_plain) × 100, kept = Σ|w| kept by 2:4.

    .venv/bin/python bench/permute_nm.py [--workers 2] [--budget 50] [--kicks 1000] [--ceiling 4]
                                         [--out bench/results/permute_nm.json]

Each search stops after ``--kicks`` perturbations or at its time limit, whichever comes first (the default
lets every search use its whole share of the budget).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from icd.io.bench_result import BenchRecord  # noqa: E402
from icd.solver import Constraint, efficacy_percent, kept_nm, kept_upper_bound, search_nm_permutation  # noqa: E402
from icd.solver.nm_kernels import KERNEL, warm_up  # noqa: E402

N, M = 2, 4
HEAD_DIM = 32
POOL_YU_RANDOM = 35.5
# Share of the wall budget each matrix kind gets (proportional to what its search needs to converge).
BUDGET_WEIGHT = {"query": 1.0, "key": 1.0, "value": 1.0, "attention.output.dense": 1.0,
                 "intermediate.dense": 2.0, "output.dense": 5.0}


def kind_of(name: str) -> str:
    for kind in ("query", "key", "value", "attention.output.dense", "intermediate.dense"):
        if name.endswith(kind):
            return kind
    return "output.dense"


def load_linears() -> dict[str, np.ndarray]:
    """MiniLM's 36 encoder Linear weights, ``layer.{i}.<module>`` → float64 array (rows = outputs)."""
    import torch

    from icd.config.schema import ModelSection
    from icd.model.loader import load_encoder

    encoder = load_encoder(ModelSection())
    return {f"layer.{name}": module.weight.detach().to(torch.float64).numpy().copy()
            for name, module in encoder.bert.encoder.layer.named_modules() if isinstance(module, torch.nn.Linear)}


def _search_one(job: tuple[str, np.ndarray, float, Constraint | None, int]) -> dict:
    name, weight, limit, constraint, kicks = job
    warm_up()
    cpu = time.process_time()
    result = search_nm_permutation(np.abs(weight), N, M, time_limit_s=limit, constraint=constraint, kicks=kicks)
    cpu = time.process_time() - cpu
    return {"name": name, "shape": list(weight.shape), "efficacy": round(result.efficacy, 3),
            "kept_plain": result.kept_plain, "kept_permuted": result.kept_permuted, "kept_upper": result.kept_upper,
            "seconds": round(result.seconds, 3), "cpu_s": round(cpu, 3), "time_limit_s": round(limit, 3),
            "perm": result.perm.tolist()}


def _init_worker() -> None:
    warm_up()


def run_jobs(jobs: list, workers: int) -> list[dict]:
    if workers <= 1:
        return [_search_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        return list(pool.map(_search_one, jobs))


def bench_random(seconds: float, shape_limit: float) -> list[dict]:
    rows = []
    for label, draw in (("uniform", lambda rng: rng.random((64, 128))),
                        ("gaussian", lambda rng: rng.standard_normal((64, 128)))):
        effs = []
        for seed in range(3):
            res = search_nm_permutation(np.abs(draw(np.random.default_rng(seed))), N, M, time_limit_s=seconds,
                                        seed=seed, kicks=8)
            effs.append(res.efficacy)
        rows.append({"matrix": f"random 64x128 {label} (3 seeds)", "efficacy_mean": round(float(np.mean(effs)), 3),
                     "efficacy": [round(e, 3) for e in effs], "reference_pool_yu": POOL_YU_RANDOM})
    # The same search on random |N(0,1)| matrices of MiniLM's shapes: what efficacy the shape alone allows.
    for shape in ((384, 384), (1536, 384), (384, 1536)):
        res = search_nm_permutation(np.abs(np.random.default_rng(0).standard_normal(shape)), N, M,
                                    time_limit_s=shape_limit, kicks=2)
        rows.append({"matrix": f"random {shape[0]}x{shape[1]} gaussian (MiniLM shape)",
                     "efficacy_mean": round(res.efficacy, 3), "efficacy": [round(res.efficacy, 3)],
                     "seconds": round(res.seconds, 2)})
    return rows


def time_limits(linears: dict[str, np.ndarray], budget: float, workers: int) -> dict[str, float]:
    """Each matrix's share of the wall budget (proportional to what its search needs to converge)."""
    weights = {name: BUDGET_WEIGHT[kind_of(name)] for name in linears}
    scale = budget * workers / sum(weights.values())
    return {name: scale * weight for name, weight in weights.items()}


def bench_alone(linears: dict[str, np.ndarray], budget: float, workers: int, kicks: int) -> dict:
    limits = time_limits(linears, budget, workers)
    # Longest jobs first so the two workers finish together.
    jobs = sorted(((name, w, limits[name], None, kicks) for name, w in linears.items()), key=lambda j: -j[2])
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = run_jobs(jobs, workers)
    wall = time.perf_counter() - start
    results.sort(key=lambda r: list(linears).index(r["name"]))
    effs = [r["efficacy"] for r in results]
    return {"matrices": results, "efficacy_mean": round(float(np.mean(effs)), 3), "efficacy_min": round(min(effs), 3),
            "all_above_plain": bool(min(effs) > 0), "wall_s": round(wall, 2), "workers": workers,
            "cpu_s": round(sum(r["cpu_s"] for r in results), 2),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "kicks": kicks, "target": {"efficacy_mean": 30.0, "wall_s": 60.0}}


def bench_ceiling(linears: dict[str, np.ndarray], alone: dict, budget: float, workers: int, kicks: int,
                  factor: float) -> dict:
    """Layer 0's matrices again with ``factor``× their time limit: what more search time buys."""
    limits = time_limits(linears, budget, workers)
    names = [name for name in linears if name.startswith("layer.0.")]
    jobs = [(name, linears[name], factor * limits[name], None, kicks) for name in names]
    results = run_jobs(jobs, workers)
    by_name = {r["name"]: r for r in alone["matrices"]}
    rows = [{"name": r["name"], "efficacy_budget": by_name[r["name"]]["efficacy"], "efficacy_long": r["efficacy"],
             "seconds_long": r["seconds"]} for r in results]
    return {"factor": factor, "matrices": rows,
            "efficacy_mean_budget": round(float(np.mean([r["efficacy_budget"] for r in rows])), 3),
            "efficacy_mean_long": round(float(np.mean([r["efficacy_long"] for r in rows])), 3)}


def _kept(weight: np.ndarray, perm: np.ndarray | None) -> tuple[float, float, float]:
    scores = np.abs(weight)
    permuted = scores if perm is None else scores[:, perm]
    return kept_nm(scores, N, M), kept_nm(permuted, N, M), kept_upper_bound(scores, N, M)


def bench_shared(linears: dict[str, np.ndarray], alone: dict, hidden_limit: float, vo_limit: float,
                 kicks: int) -> dict:
    layers = sorted({int(name.split(".")[1]) for name in linears})
    readers = [f"layer.{i}.{mod}" for i in layers for mod in
               ("attention.self.query", "attention.self.key", "attention.self.value", "intermediate.dense")]
    hidden = search_nm_permutation([np.abs(linears[name]) for name in readers], N, M, time_limit_s=hidden_limit,
                                   kicks=kicks)
    per_matrix = []
    for name in readers:
        plain, permuted, upper = _kept(linears[name], hidden.perm)
        per_matrix.append({"name": name, "dim": "hidden", "efficacy": round(efficacy_percent(plain, permuted, upper), 3)})
    vo_rows = []
    for i in layers:
        name = f"layer.{i}.attention.output.dense"
        res = search_nm_permutation(np.abs(linears[name]), N, M, time_limit_s=vo_limit,
                                    constraint=Constraint(block=HEAD_DIM), kicks=kicks)
        per_matrix.append({"name": name, "dim": f"layer{i}.vo (blocks of {HEAD_DIM})", "efficacy": round(res.efficacy, 3)})
        vo_rows.append(round(res.efficacy, 3))
    by_name = {r["name"]: r for r in alone["matrices"]}
    for i in layers:
        name = f"layer.{i}.output.dense"
        per_matrix.append({"name": name, "dim": f"layer{i}.ffn (W2 columns; same problem as alone)",
                           "efficacy": by_name[name]["efficacy"]})
    effs = [r["efficacy"] for r in per_matrix]
    return {"hidden": {"matrices": len(readers), "rows": hidden.rows, "cols": hidden.cols,
                       "efficacy_joint": round(hidden.efficacy, 3), "seconds": round(hidden.seconds, 2)},
            "vo_efficacy": vo_rows, "matrices": per_matrix, "efficacy_mean": round(float(np.mean(effs)), 3),
            "efficacy_min": round(min(effs), 3)}


def print_table(report: dict) -> None:
    print(f"kernel={report['kernel']}  machine={report['machine']['cpu']} ({report['machine']['cores']} cores)")
    print("\n(a) random matrices")
    for row in report["random"]:
        ref = f"  (Pool & Yu: {POOL_YU_RANDOM}%)" if "reference_pool_yu" in row else ""
        print(f"  {row['matrix']:<40} efficacy {row['efficacy_mean']:6.2f}%{ref}")
    alone = report["alone"]
    print("\n(b) MiniLM encoder Linears, each alone")
    print(f"  {'matrix':<40} {'shape':>11} {'efficacy%':>9} {'seconds':>8} {'cpu_s':>6}")
    for r in alone["matrices"]:
        print(f"  {r['name']:<40} {'x'.join(map(str, r['shape'])):>11} {r['efficacy']:9.2f} {r['seconds']:8.2f}"
              f" {r['cpu_s']:6.2f}")
    print(f"  mean {alone['efficacy_mean']:.2f}%  min {alone['efficacy_min']:.2f}%  all > 0: {alone['all_above_plain']}"
          f"  wall {alone['wall_s']:.1f} s with {alone['workers']} worker(s), {alone['cpu_s']:.1f} CPU-s of search"
          f"  (targets: mean >= 30%, <= 60 s)")
    print(f"  machine load average (1 min) before/after: {alone['load_average_1m']} on {os.cpu_count()} cores")
    ceiling = report.get("ceiling")
    if ceiling:
        print(f"\n(c) ceiling probe: layer 0 with {ceiling['factor']:g}x the time limit")
        for r in ceiling["matrices"]:
            print(f"  {r['name']:<40} {r['efficacy_budget']:6.2f}% -> {r['efficacy_long']:6.2f}%"
                  f"  ({r['seconds_long']:.1f} s)")
        print(f"  mean {ceiling['efficacy_mean_budget']:.2f}% -> {ceiling['efficacy_mean_long']:.2f}%")
    shared = report["shared"]
    print("\n(d) under the model's shared constraints")
    h = shared["hidden"]
    print(f"  hidden: one perm for {h['matrices']} matrices ({h['rows']}x{h['cols']} stacked): joint efficacy "
          f"{h['efficacy_joint']:.2f}% in {h['seconds']:.1f} s")
    print(f"  vo (within head blocks of {HEAD_DIM}): " + ", ".join(f"{e:.2f}%" for e in shared["vo_efficacy"]))
    print(f"  per-matrix mean over all 36 under shared constraints: {shared['efficacy_mean']:.2f}%  "
          f"(min {shared['efficacy_min']:.2f}%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--budget", type=float, default=50.0, help="wall seconds for the 36 searches (b)")
    parser.add_argument("--kicks", type=int, default=1000,
                        help="perturbations per search before it stops by itself (else its time limit stops it)")
    parser.add_argument("--ceiling", type=float, default=4.0,
                        help="ceiling probe: layer 0 again with this many times the time limit (0 = skip)")
    parser.add_argument("--hidden-limit", type=float, default=30.0)
    parser.add_argument("--vo-limit", type=float, default=1.5)
    parser.add_argument("--random-limit", type=float, default=5.0)
    parser.add_argument("--shape-limit", type=float, default=12.0, help="cap for random matrices of MiniLM shapes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "permute_nm.json")
    args = parser.parse_args(argv)
    record = BenchRecord.start(None if argv is None else ["bench/permute_nm.py", *argv])
    warm_up()
    t0 = time.perf_counter()
    linears = load_linears()
    load_s = time.perf_counter() - t0
    report = {"bench": "permute_nm", "kernel": KERNEL, "pattern": f"{N}:{M}", "scores": "|W|",
              "model_load_s": round(load_s, 2)}
    report["random"] = bench_random(args.random_limit, args.shape_limit)
    report["alone"] = bench_alone(linears, args.budget, args.workers, args.kicks)
    if args.ceiling > 0:
        report["ceiling"] = bench_ceiling(linears, report["alone"], args.budget, args.workers, args.kicks,
                                          args.ceiling)
    report["shared"] = bench_shared(linears, report["alone"], args.hidden_limit, args.vo_limit, args.kicks)
    for row in report["alone"]["matrices"]:
        row.pop("perm")
    report = record.write(args.out, report)
    print_table(report)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
