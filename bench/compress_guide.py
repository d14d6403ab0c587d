"""The guide's correlation compression on real run directories: per matrix, what each method keeps and how good a
permutation solved from it is (the validation objective of icd/ops/compress.py), in one process.

    python bench/compress_guide.py --run-dir runs/bert_production [--run-dir runs/bert_base_shape] [--ratio 0.1]

For every matrix of each run's correlation_matrix.npz: n, stored density, and the objective ratio
``J(π_original) / J(π_compressed)`` (spectral ordering from a seeded shuffle, scored on the original) of:
``top_r`` (icd compress at ``--ratio``: the largest-|w| entries within r of the pairs, float16), ``top_stored_<f>``
(a fraction f of the *stored* entries, to show what dropping stored entries costs), ``lowrank_r`` (the previous
method: a rank ≈ r·n eigen-reconstruction), and ``float16_all`` (every entry, float16). Then the file as
``icd compress --validate-accuracy`` writes it (bytes before/after, per-matrix kept share). Writes
bench/results/compress_guide.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from icd.io.atomic import write_json_atomic  # noqa: E402
from icd.ops.compress import (_matrices, _upper_entries, compress_file, coo_dense, keep_count,  # noqa: E402
                              objective_ratio, top_entries)

STORED_FRACTIONS = (0.4, 0.8)


def _load() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def _lowrank(dense: np.ndarray, ratio: float) -> np.ndarray:
    n = dense.shape[0]
    rank = max(1, min(n, int(ratio * n * n // (n + 1))))
    values, vectors = np.linalg.eigh((dense + dense.T) / 2.0)
    top = np.argsort(-np.abs(values), kind="stable")[:rank]
    v = vectors[:, top].astype(np.float16).astype(np.float64)
    return (v * values[top]) @ v.T


def _matrix_row(name: str, dense: np.ndarray, ratio: float) -> dict[str, object]:
    n = dense.shape[0]
    stored = int(np.count_nonzero(_upper_entries(dense)[2]))
    row: dict[str, object] = {"name": name, "n": n, "stored_entries": stored,
                              "stored_share_of_pairs": round(stored / (n * (n - 1) / 2), 5)}
    row["top_r"] = round(objective_ratio(dense, coo_dense(**top_entries(dense, keep_count(n, stored, ratio)))), 4)
    for fraction in STORED_FRACTIONS:
        keep = max(1, int(round(fraction * stored)))
        row[f"top_stored_{fraction:g}"] = round(objective_ratio(dense, coo_dense(**top_entries(dense, keep))), 4)
    row["lowrank_r"] = round(objective_ratio(dense, _lowrank(dense, ratio)), 4)
    row["float16_all"] = round(objective_ratio(dense, coo_dense(**top_entries(dense, stored))), 4)
    return row


def measure_run(run_dir: Path, ratio: float) -> dict[str, object]:
    path = run_dir / "correlation_matrix.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads((run_dir / "config.lock.json").read_text())
    began = time.perf_counter()
    rows = [_matrix_row(name, dense, ratio) for name, (dense, _) in _matrices(arrays).items()]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        shutil.copy2(path, copy)
        result = compress_file(copy, ratio, validate=True)
    return {
        "run_dir": str(run_dir), "config_name": config.get("name"), "model": config.get("model"),
        "matrices": rows, "seconds": round(time.perf_counter() - began, 1),
        "icd_compress": {"status": result.status.value, "bytes_before": result.bytes_before,
                         "bytes_after": result.bytes_after, "worst_ratio": result.worst_ratio,
                         "escalated": {r.name: round(r.share, 4) for r in result.matrices if r.escalated}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, action="append", required=True)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compress_guide.json")
    args = parser.parse_args(argv)
    start_load = _load()
    runs = [measure_run(run_dir, args.ratio) for run_dir in args.run_dir]
    record = {
        "name": "compress_guide",
        "command": " ".join(["python", "bench/compress_guide.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name")), platform.processor()), "cores": os.cpu_count()},
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": start_load, "load_average_end": _load(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__},
        "objective": "J(pi_original) / J(pi_compressed) on the original matrix; spectral ordering, no refinement, "
                     "same seeded shuffle (icd.ops.compress.objective_ratio)",
        "ratio": args.ratio, "runs": runs,
        "note": "deterministic figures (no timing); load average recorded for completeness",
    }
    write_json_atomic(args.out, record)
    for run in runs:
        print(f"{run['run_dir']}: {run['icd_compress']}")
        for row in run["matrices"]:
            print(f"  {row['name']}: n={row['n']} stored={row['stored_share_of_pairs']:.3f} top_r={row['top_r']} "
                  f"lowrank={row['lowrank_r']} stored40={row['top_stored_0.4']} f16={row['float16_all']}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
