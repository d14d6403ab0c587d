"""Benchmark (not a test): the issue-8 §2 ablation of permutations under one-shot 2:4 on every encoder Linear.

Three ``icd run``s of ``configs/minilm.json`` with ``transforms=[2:4 <method>, scope all]`` (the other
``NMSparsityConfig`` fields at their defaults unless ``--options`` sets them):
* ``no_permutation`` — linear mode with ``solver.method=identity`` (the transform alone);
* ``linear`` — permute (N:M-kept-importance objective), then prune;
* ``iterative`` — linear, then calibrate the pruned model, re-permute under whole-group constraints, accept or
  roll back.
Fidelity on 256 held-out texts vs fp32 (mean-pooled embeddings). Writes bench/results/ablation_nm.json.

Usage: .venv/bin/python bench/ablation_nm.py [--method sparsegpt|wanda|magnitude] [--calibration 512]
       [--options '{"refit": false}']
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from icd.config import load_config
from icd.io.bench_result import BenchRecord
from icd.pipeline.runner import run_config

VARIANTS = {
    "no_permutation": ["pipeline.mode=linear", "solver.method=identity"],
    "linear": ["pipeline.mode=linear"],
    "iterative": ["pipeline.mode=iterative"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sparsegpt", choices=["sparsegpt", "wanda", "magnitude"])
    parser.add_argument("--calibration", type=int, default=512, help="calibration texts (data.calibration_texts)")
    parser.add_argument("--options", default="{}", help="extra NMSparsityConfig fields, as a JSON object")
    parser.add_argument("--out", default="bench/results/ablation_nm.json")
    args = parser.parse_args(argv)
    record = BenchRecord.start(None if argv is None else ["bench/ablation_nm.py", *argv])
    options = json.loads(args.options)
    transform = json.dumps([{"type": "nm_sparsity", "n": 2, "m": 4, "scope": "all", "method": args.method, **options}])
    rows = []
    for name, overrides in VARIANTS.items():
        cfg = load_config("configs/minilm.json", [f"transforms={transform}", f"data.calibration_texts={args.calibration}",
                                                  *overrides])
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            result = run_config(cfg, Path(tmp) / "run", progress=False)
            seconds = time.perf_counter() - began
        efficacies = [s.solver["efficacy"] for s in result.solutions.values() if "efficacy" in s.solver]
        row = result.final.row(result.dense) | {"variant": name, "run_s": round(seconds, 1),
                                                "efficacy_mean": sum(efficacies) / len(efficacies) if efficacies else None,
                                                "decisions": [d.reason for d in result.decisions]}
        rows.append(row)
    table = Table(title=f"2:4 {args.method} on all 36 encoder Linears of MiniLM-L6 (256 held-out texts)")
    for column in ("variant", "efficacy_mean", "cos_mean", "cos_min", "nn_agreement", "run_s"):
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in
                        ("variant", "efficacy_mean", "cos_mean", "cos_min", "nn_agreement", "run_s")])
    Console().print(table)
    record.write(args.out, {"method": args.method, "options": options, "calibration_texts": args.calibration,
                            "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
