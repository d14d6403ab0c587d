"""Does a text's served output depend on the batch it came in? One text alone (trimmed) vs in a padded batch.

The python backend runs each batch as Triton formed it, its trailing padding trimmed (``icd_trim_padding``). The same
text can therefore run alone at a few tokens or inside a batch of others padded to a longer length. For each
variant this bench exports the run's model as ``icd profile`` does, runs the run's held-out texts in batches of
``--batch-size`` padded to ``--seq-len`` (as clients pad them), runs every text again alone with its padding trimmed
to a multiple of ``--multiple``, and compares the two outputs of each text: how many differ at all, the largest
absolute difference, the lowest cosine between them, and — for the texts whose two outputs differ by more than
``--tolerance`` — the cosine of each output to the original fp32 model's (``icd.measure.encode``), which says whether
one of them is the worse. Usage::

    .venv/bin/python bench/padding_consistency.py --run-dir runs/minilm
        [--variants openvino:fp32 openvino:bf16 openvino:int8 onnx:fp32] [--out bench/results/padding_consistency.json]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from icd.io.bench_result import BenchRecord
from icd.serve.backend.icd_runtime import trim_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_heldout import run_heldout  # noqa: E402

RESULT = Path(__file__).parent / "results" / "padding_consistency.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (icd run --out)")
    parser.add_argument("--variants", nargs="+",
                        default=["openvino:fp32", "openvino:bf16", "openvino:int8", "onnx:fp32"],
                        help="runtime:precision, as icd profile names them")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=32, help="tokens every text is padded / truncated to")
    parser.add_argument("--multiple", type=int, default=8, help="the export's icd_trim_padding")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="a difference above this is reported per text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _compare(session, ids: np.ndarray, mask: np.ndarray, batch_size: int, multiple: int) -> tuple[np.ndarray, ...]:
    """Each text's output inside its padded batch and alone with its padding trimmed."""
    in_batch = np.concatenate([np.asarray(session.numpy(ids[s:s + batch_size], mask[s:s + batch_size]), np.float32)
                               for s in range(0, len(ids), batch_size)])
    alone = np.concatenate([np.asarray(session.numpy(*trim_batch(ids[r:r + 1], mask[r:r + 1], multiple)), np.float32)
                            for r in range(len(ids))])
    return in_batch, alone


def _row(in_batch: np.ndarray, alone: np.ndarray, reference: np.ndarray, tolerance: float) -> dict[str, Any]:
    diff = np.abs(in_batch - alone).max(axis=-1)
    apart = np.flatnonzero(diff > tolerance)
    return {
        "texts": int(len(diff)), "texts_differing": int((diff > 0).sum()),
        "texts_above_tolerance": int(len(apart)), "max_abs_diff": float(diff.max()),
        "min_cos_between": float(_cos(in_batch, alone).min()),
        "above_tolerance": [{"text": int(i), "max_abs_diff": float(diff[i]),
                             "cos_to_fp32_in_batch": float(_cos(in_batch[i], reference[i])),
                             "cos_to_fp32_alone": float(_cos(alone[i], reference[i]))} for i in apart],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from icd.runtimes.base import Precision
    from icd.runtimes.registry import get_runtime

    record = BenchRecord.start(argv)
    run = run_heldout(args.run_dir, args.seq_len)  # the reference on the texts as the variants run them (truncated)
    source, heldout, reference = run.source, run.texts, run.reference.numpy()
    sent = source.tokenizer(heldout, padding="max_length", truncation=True, max_length=args.seq_len,
                            return_tensors="np")
    ids, mask = sent["input_ids"].astype(np.int64), sent["attention_mask"].astype(np.int64)
    figures: dict[str, Any] = {"settings": {**{k: v for k, v in vars(args).items() if k not in ("run_dir", "out")},
                                            "run": args.run_dir.name, "texts": len(heldout)}, "variants": {}}
    work = Path(tempfile.mkdtemp(prefix="icd-bench-padding-consistency-"))
    try:
        for variant in args.variants:
            name, precision = variant.split(":")
            folder = work / variant.replace(":", "_")
            folder.mkdir()
            runtime = get_runtime(name)
            runtime.export(source, folder, Precision(precision), output_gather=True, threads=args.threads)
            in_batch, alone = _compare(runtime.load(folder, args.threads), ids, mask, args.batch_size, args.multiple)
            row = _row(in_batch, alone, reference, args.tolerance)
            figures["variants"][variant] = row
            print(f"{variant}: {row['texts_differing']} of {row['texts']} texts differ (alone vs in batch), "
                  f"{row['texts_above_tolerance']} by more than {args.tolerance:g}; max |diff| "
                  f"{row['max_abs_diff']:.2e}, min cos between {row['min_cos_between']:.6f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["how"] = ("in-process, each variant exported as icd profile exports it; the run's held-out texts padded "
                      "to --seq-len, run in batches of --batch-size and again one by one with the padding trimmed to "
                      "a multiple of --multiple (as the python backend runs a lone request); per-text comparison; "
                      "cosine to the original fp32 model on the same truncated texts")
    record.write(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
