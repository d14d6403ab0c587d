"""Benchmark (not a test): wall time of the guide's optimize command and of every stage of ``icd run``.

* ``guide`` — the production guide's command, as a user runs it, timed from outside (process start to exit):
  ``python -m icd.cli.main run -c configs/bert.json --override pipeline.mode=iterative --out <tmp>/bert_production``;
  then the run's ``layout_efficiency`` (the ``triton_icd_layout_efficiency`` gauge's value, from its
  permutation.json and correlation_matrix.npz) and the same measure for the identity layout.
* ``minilm`` / ``bert_base`` — stage wall times (events.jsonl) of ``configs/minilm.json`` (real weights) and
  ``configs/bert_base.json`` (random weights, bert-base shapes) in ``--mode`` (iterative by default), in process;
* ``minilm_compact`` — ``configs/minilm.json`` with one ``compact`` transform (``budget`` 0.75, no distillation)
  in place of its int8: the structured-compaction search's time on MiniLM (compaction issue's target: <= 90 s).

Prints one table per model and writes bench/results/optimizer.json (command, machine, date, load average),
rewritten after each part so a long run keeps what it measured.

Usage: .venv/bin/python bench/optimizer.py [--mode iterative] [--only guide|minilm|bert_base ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from icd.config import load_config
from icd.export.layout_efficiency import layout_efficiency
from icd.io.bench_result import BenchRecord
from icd.io.permutation_file import read_permutation_file
from icd.pipeline.runner import run_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"minilm": "configs/minilm.json", "bert_base": "configs/bert_base.json",
           "minilm_compact": "configs/minilm.json"}
OVERRIDES = {"minilm_compact": ['transforms=[{"type": "compact", "budget": 0.75}]']}
GUIDE_ARGS = ["run", "-c", "configs/bert.json", "--override", "pipeline.mode=iterative"]
PARTS = ("guide", *CONFIGS)


def stage_times(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _table(title: str, events: list[dict]) -> Table:
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for event in events:
        table.add_row(event["stage"], f"{event['seconds']:.2f}")
    return table


def bench_guide(console: Console, keep: Path | None = None) -> dict:
    """The guide's command in a fresh process, timed wall-clock, and the layout efficiency of what it wrote
    (``keep``: the run is copied there afterwards, e.g. for ``bench/serving.py``)."""
    with tempfile.TemporaryDirectory(prefix="icd-bench-") as tmp:
        out = Path(tmp) / "bert_production"
        argv = [sys.executable, "-m", "icd.cli.main", *GUIDE_ARGS, "--out", str(out), "--no-progress"]
        started = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        perms = read_permutation_file(out / "permutation.json")
        layout, dims = layout_efficiency(perms, out / "correlation_matrix.npz")
        identity, _ = layout_efficiency(perms, out / "correlation_matrix.npz", identity=True)
        events = stage_times(out)
        decisions = json.loads((out / "metrics.json").read_text())["decisions"]
        if keep is not None:
            shutil.copytree(out, keep)
    console.print(_table(f"guide command: {wall:.1f} s wall (process start to exit)", events))
    console.print(f"layout_efficiency {layout:.3f} (identity layout {identity:.3f}) over {len(dims)} dims")
    return {"argv": ["python", "-m", "icd.cli.main", *GUIDE_ARGS, "--out", "runs/bert_production"],
            "wall_s": round(wall, 1),
            "stages": [{"stage": e["stage"], "seconds": e["seconds"]} for e in events],
            "decisions": [d["reason"] for d in decisions],
            "layout_efficiency": {"layout": round(layout, 4), "identity": round(identity, 4), "dims": dims}}


def bench_stages(name: str, mode: str, console: Console) -> dict:
    overrides = OVERRIDES.get(name, [])
    cfg = load_config(CONFIGS[name], [f"pipeline.mode={mode}", *overrides])
    with tempfile.TemporaryDirectory(prefix="icd-bench-") as tmp:
        started = time.perf_counter()
        run_config(cfg, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - started
        events = stage_times(Path(tmp) / "run")
    console.print(_table(f"{name} ({mode}): {total:.1f} s wall", events))
    return {"config": CONFIGS[name], "overrides": overrides, "mode": mode, "total_s": round(total, 1),
            "stages": [{"stage": e["stage"], "seconds": e["seconds"]} for e in events]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="iterative", choices=["dense", "linear", "iterative"])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "optimizer.json")
    parser.add_argument("--keep-guide-run", type=Path, metavar="DIR",
                        help="copy the guide command's run directory here (must not exist)")
    args = parser.parse_args(argv)
    if args.keep_guide_run is not None and args.keep_guide_run.exists():
        parser.error(f"--keep-guide-run: {args.keep_guide_run} already exists")
    record = BenchRecord.start(None if argv is None else ["bench/optimizer.py", *argv])
    console = Console()
    results: dict = {"models": {}}
    doc = None
    if "guide" in args.only:
        results["guide"] = bench_guide(console, args.keep_guide_run)
        doc = record.write(args.out, results)  # checkpoint: each part is kept as soon as it is measured
    for name in CONFIGS:
        if name in args.only:
            results["models"][name] = bench_stages(name, args.mode, console)
            doc = record.write(args.out, results)
    if doc is None:
        doc = record.write(args.out, results)
    console.print(f"wrote {args.out} (load average {doc['load_average']['start']} -> {doc['load_average']['end']}"
                  f"{', HIGH' if doc['load_high'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
