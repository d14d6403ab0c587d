"""Benchmark (not a test): wall time of every stage of ``icd run`` for MiniLM (real weights) and bert-base
shapes (random weights). Prints one table per model and writes bench/results/optimizer.json.

Usage: .venv/bin/python bench/optimizer.py [--mode iterative] [--only minilm|bert_base]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from icd.config import load_config
from icd.io.atomic import write_json_atomic
from icd.pipeline.runner import run_config

CONFIGS = {"minilm": "configs/minilm.json", "bert_base": "configs/bert_base.json"}


def stage_times(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="iterative", choices=["dense", "linear", "iterative"])
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--out", default="bench/results/optimizer.json")
    args = parser.parse_args(argv)
    console = Console()
    results = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
               "mode": args.mode, "models": {}}
    for name, path in CONFIGS.items():
        if args.only and name != args.only:
            continue
        cfg = load_config(path, [f"pipeline.mode={args.mode}"])
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            run_config(cfg, Path(tmp) / "run", progress=False)
            total = time.perf_counter() - started
            events = stage_times(Path(tmp) / "run")
        table = Table(title=f"{name} ({args.mode}): {total:.1f} s wall")
        table.add_column("stage")
        table.add_column("seconds", justify="right")
        for event in events:
            table.add_row(event["stage"], f"{event['seconds']:.2f}")
        console.print(table)
        results["models"][name] = {"total_s": total, "stages": [{"stage": e["stage"], "seconds": e["seconds"]}
                                                                 for e in events]}
    write_json_atomic(args.out, results)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
