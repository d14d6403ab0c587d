"""Does trimming the padding change what a per-batch int8 is worth? Fidelity and speed of TorchScript / ONNX int8.

TorchScript int8 (icd's dynamic int8 GEMMs) and ONNX Runtime int8 (``quantize_dynamic``) take each activation's
int8 range from the batch they are given, padding included, so trimming a batch's padding (the python backend's
``icd_trim_padding``) changes their outputs. What matters is whether it changes their *fidelity*: this bench
exports the run's int8 on each runtime as ``icd profile`` does, draws served-like batches of the run's held-out
texts (random texts per batch, seeded, padded to ``--seq-len`` as clients pad them), runs them padded (multiple 0)
and trimmed at each ``--multiples`` value, and compares the outputs with the original fp32 model's on the same texts
(cos mean / min, nearest-neighbour agreement: ``icd.measure.fidelity``), with the time of each pass (``--threads``
threads; each batch shape run once first, untimed). Usage::

    .venv/bin/python bench/int8_padding.py --run-dir runs/minilm [--runtimes torchscript onnx] [--multiples 8 1]
        [--batch-size 8] [--out bench/results/int8_padding.json]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from icd.io.bench_result import BenchRecord
from icd.serve.backend.icd_runtime import trim_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_heldout import run_heldout  # noqa: E402

RESULT = Path(__file__).parent / "results" / "int8_padding.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (icd run --out)")
    parser.add_argument("--runtimes", nargs="+", default=["torchscript", "onnx"])
    parser.add_argument("--multiples", type=int, nargs="+", default=[8, 1],
                        help="icd_trim_padding values besides 0 (the padded batches, always run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens every text is padded / truncated to")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _pass(session, batches) -> tuple[np.ndarray, float]:
    """Outputs of every batch in order and the summed seconds (each new shape run once first, untimed)."""
    seen, outputs, seconds = set(), [], 0.0
    for ids, mask in batches:
        if ids.shape not in seen:
            seen.add(ids.shape)
            session.numpy(ids, mask)
        start = time.perf_counter()
        out = session.numpy(ids, mask)
        seconds += time.perf_counter() - start
        outputs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outputs), seconds


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    from icd.measure.fidelity import fidelity
    from icd.runtimes.base import Precision
    from icd.runtimes.registry import get_runtime

    record = BenchRecord.start(argv)
    run = run_heldout(args.run_dir, args.seq_len)  # the reference on the texts as the int8 runs them (truncated)
    cfg, source, heldout, reference = run.cfg, run.source, run.texts, run.reference
    order = list(range(len(heldout)))
    random.Random(args.seed).shuffle(order)  # served-like: unrelated texts share a batch
    sent = source.tokenizer([heldout[i] for i in order], padding="max_length", truncation=True,
                            max_length=args.seq_len, return_tensors="np")
    multiples = [0] + [m for m in dict.fromkeys(args.multiples) if m != 0]
    figures: dict[str, Any] = {"settings": {**{k: v for k, v in vars(args).items() if k not in ("run_dir", "out")},
                                            "multiples": multiples, "run": args.run_dir.name,
                                            "texts": len(heldout)}, "runtimes": {}}
    work = Path(tempfile.mkdtemp(prefix="icd-bench-int8-padding-"))
    try:
        for name in args.runtimes:
            runtime = get_runtime(name)
            folder = work / name
            folder.mkdir()
            runtime.export(source, folder, Precision.INT8, output_gather=True, threads=args.threads)
            session = runtime.load(folder, args.threads)
            rows = {}
            for multiple in multiples:
                batches = [trim_batch(sent["input_ids"][s:s + args.batch_size],
                                      sent["attention_mask"][s:s + args.batch_size], multiple)
                           for s in range(0, len(order), args.batch_size)]
                out, seconds = _pass(session, batches)
                back = np.empty_like(out)
                back[order] = out
                fid = fidelity(reference, torch.from_numpy(back), cfg.model.task.value)
                rows[str(multiple)] = {"cos_mean": fid.cos_mean, "cos_min": fid.cos_min,
                                       "nn_agreement": fid.nn_agreement, "argmax_agreement": fid.argmax_agreement,
                                       "texts_per_s": len(order) / seconds, "seconds": seconds,
                                       "mean_tokens_run": float(np.mean([b[0].shape[1] for b in batches]))}
                print(f"{name}:int8 multiple {multiple}: cos mean {fid.cos_mean:.5f} min {fid.cos_min:.4f} "
                      f"NN {fid.nn_agreement:.3f}, {rows[str(multiple)]['texts_per_s']:.1f} texts/s "
                      f"({rows[str(multiple)]['mean_tokens_run']:.1f} tokens)", flush=True)
            figures["runtimes"][name] = {"variant": f"{name}:int8", "by_multiple": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["how"] = ("in-process, the run's int8 exported per runtime as icd profile exports it; the run's held-out "
                      "texts shuffled (seed) into batches, padded to --seq-len, each batch run as the python backend "
                      "runs it at each multiple (0: as sent); fidelity vs the original fp32 model on the same texts")
    record.write(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
