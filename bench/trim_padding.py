"""What trimming a batch's padding buys, per runtime: the python backend's ``icd_trim_padding`` in-process.

Clients of the guide pad every text to one length (128 tokens) so that Triton's dynamic batcher can put requests
in one batch; the docstrings they send are mostly far shorter. The exported python-backend model cuts the
trailing columns that no row of a batch attends to, rounded up to a multiple of ``icd_trim_padding`` tokens
(``icd.serve.backend.icd_runtime.trimmed_length``), before it runs the artefact. This bench exports a run as
``bench/serving.py`` does — ``bert_icd`` (the run's ``icd profile`` choice unless ``--runtime``) and
``bert_baseline`` (TorchScript fp32) — loads each artefact in this process with ``--threads`` threads (the served
instance's budget) and runs the same batches of real text — the docstrings icd's load generator sends, padded to
``--seq-len`` as it pads them — at each multiple:

* ``texts_per_s``: texts over the summed seconds of the runs (each batch shape run once first, untimed);
* ``mean_tokens_run``: the mean length run;
* ``max_abs_diff_vs_padded`` / ``cos_min_vs_padded``: the outputs against the same artefact on the padded batch
  (multiple 0), which is what trimming must preserve.

Every multiple runs every batch once per round; rounds alternate the multiples' order. Usage::

    .venv/bin/python bench/trim_padding.py --run-dir runs/minilm [--batch-sizes 1 16] [--multiples 0 1 8 16 32]
        [--batches 40] [--rounds 3] [--out bench/results/trim_padding.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from icd.io.bench_result import BenchRecord
from icd.serve.backend.icd_runtime import trim_batch

RESULT = Path(__file__).parent / "results" / "trim_padding.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (icd run --out)")
    parser.add_argument("--runtime", help="bert_icd's runtime [the run's icd profile choice, else torchscript]")
    parser.add_argument("--precision", help="bert_icd's precision [profile choice, else the run's own]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--multiples", type=int, nargs="+", default=[0, 1, 8, 16, 32],
                        help="icd_trim_padding values; 0 (the padded batch) is the reference and always runs")
    parser.add_argument("--batches", type=int, default=40, help="batches per batch size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens every text is padded / truncated to")
    parser.add_argument("--threads", type=int, default=1, help="threads per artefact (served: the budget, 1 here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _texts(seq_len: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The texts icd's load generator sends (real docstrings), padded to ``seq_len`` as it pads them."""
    from icd.load.inputs import token_batches
    from icd.load.settings import LoadSettings

    batches = token_batches(LoadSettings(input_shape=seq_len, pool_size=rows, batch_size=1, workers=0, seed=seed))
    return (np.concatenate([b.input_ids for b in batches]), np.concatenate([b.attention_mask for b in batches]))


def _measure(session, ids, mask, selections, multiples, rounds) -> dict[int, dict[str, Any]]:
    plans = {m: [trim_batch(ids[rows], mask[rows], m) for rows in selections] for m in multiples}
    for plan in plans.values():
        for shape in sorted({batch[0].shape for batch in plan}):
            session.numpy(*next(batch for batch in plan if batch[0].shape == shape))
    seconds = {m: 0.0 for m in multiples}
    outputs: dict[int, list[np.ndarray]] = {m: [] for m in multiples}
    for round_index in range(rounds):
        order = multiples if round_index % 2 == 0 else multiples[::-1]
        for m in order:
            for batch in plans[m]:
                start = time.perf_counter()
                out = session.numpy(*batch)
                seconds[m] += time.perf_counter() - start
                if round_index == 0:
                    outputs[m].append(np.asarray(out, dtype=np.float32))
    texts = sum(len(rows) for rows in selections) * rounds
    reference = np.concatenate(outputs[0])
    rows = {}
    for m in multiples:
        got = np.concatenate(outputs[m])
        cos = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
        rows[m] = {"texts_per_s": texts / seconds[m], "seconds": seconds[m],
                   "mean_tokens_run": float(np.mean([batch[0].shape[1] for batch in plans[m]])),
                   "max_abs_diff_vs_padded": float(np.abs(got - reference).max()),
                   "cos_min_vs_padded": float(cos.min())}
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from icd.export.options import ExportOptions
    from icd.export.repository import export_model
    from icd.runtimes.registry import get_runtime

    record = BenchRecord.start(argv)
    multiples = [0] + [m for m in dict.fromkeys(args.multiples) if m != 0]
    work = Path(tempfile.mkdtemp(prefix="icd-bench-trim-"))
    figures: dict[str, Any] = {"settings": {**{k: v for k, v in vars(args).items() if k not in ("run_dir", "out")},
                                            "multiples": multiples, "run": args.run_dir.name}, "models": {}}
    try:
        exports = {
            "bert_icd": export_model(args.run_dir, work, ExportOptions(
                model_name="bert_icd", runtime=args.runtime, precision=args.precision)),
            "bert_baseline": export_model(args.run_dir, work, ExportOptions(
                model_name="bert_baseline", baseline=True, runtime="torchscript", precision="fp32")),
        }
        rng = np.random.default_rng(args.seed)
        ids, mask = _texts(args.seq_len, max(args.batch_sizes) * args.batches, args.seed)
        selections = {size: [rng.choice(len(ids), size, replace=False) for _ in range(args.batches)]
                      for size in args.batch_sizes}  # the same batches for both models
        for name, exported in exports.items():
            session = get_runtime(exported.variant.runtime).load(exported.version_dir, args.threads)
            by_size = {}
            for size in args.batch_sizes:
                rows = _measure(session, ids, mask, selections[size], multiples, args.rounds)
                by_size[str(size)] = {str(m): row for m, row in rows.items()}
                line = ", ".join(f"{m}: {row['texts_per_s']:.1f}/s ({row['mean_tokens_run']:.1f} tok, "
                                 f"{row['max_abs_diff_vs_padded']:.1e})" for m, row in rows.items())
                print(f"{name} {exported.variant.name} batch {size}: {line}", flush=True)
            figures["models"][name] = {"variant": exported.variant.name, "by_batch_size": by_size}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["how"] = ("in-process, one artefact at a time, the same batches of real docstrings padded to "
                      "--seq-len for every multiple; multiple 0 runs the padded batch (the reference)")
    record.write(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
