"""Distillation's knobs at one compaction budget: steps and the hidden-state weight, judged on held-out text.

``CompactConfig(distill_steps=…)`` trains the compacted model towards the model it was cut from
(:mod:`icd.transforms.distill`). bench/compaction.py measures it at 1500 steps with the hidden-state weight 1.0
and no other setting. This bench builds the same compaction (real MiniLM, ``act_weight``, the budget given; re-fit
and distillation on the whole calibration pool, as bench/compaction.py's ``distill`` group) once per variant
``BUDGET:STEPS:HIDDEN_WEIGHT`` and measures, against torch fp32, mean-pooled embeddings:

* ``heldout_seed0``: cos mean and NN agreement on bench/compaction.py's first held-out set (256 texts);
* ``stdlib``: the same on its second set (256 held-out stdlib docstrings);
* ``pool``: cos mean over the whole held-out pool and NN agreement on ``--subsets`` random 256-text subsets of it
  (mean, 2.5 / 97.5 percentiles; bench/nn_noise.py shows why one 256-text set is a draw).

No timing (fp32 speed depends on the budget only, bench/compaction.py times it). Writes
``bench/results/distill_knobs.json``.

``LR`` (default: ``CompactConfig``'s ``distill_lr``) is the peak learning rate, ``TOKEN_NOISE`` (default 0) the
fraction of tokens replaced at each step (``distill_token_noise``). ``--calibration-sources`` widens the
calibration pool (the held-out sets stay the default corpus').

Usage: ``.venv/bin/python bench/distill_knobs.py 0.7475:1500:1 0.7475:3000:1:1e-3 0.7475:3000:1:3e-4:0.15
[--subsets 300] [--calibration-sources stdlib,numpy,scipy,torch,transformers,networkx,sympy]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compaction import _compact, calibration_split, model_section
from nn_noise import SUBSET, HeldoutPool, agreement_on, unit_rows
from rich.console import Console

from icd.data.corpus import DEFAULT_SOURCES, CorpusSplit, load_split
from icd.io.bench_result import BenchRecord
from icd.measure.encode import encode
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext
from icd.transforms.compact_cost import flops_costs
from icd.transforms.compact_slice import layer_sizes
from icd.transforms.configs import CompactConfig

RESULT = Path(__file__).parent / "results" / "distill_knobs.json"
DEFAULT_LR = CompactConfig.model_fields["distill_lr"].default
BATCH, MAX_LENGTH = 32, 128


def _variant(text: str) -> tuple[float, int, float, float, float]:
    try:
        budget, steps, weight, *rest = text.split(":")
        if len(rest) > 2:
            raise ValueError(text)
        lr = float(rest[0]) if rest else DEFAULT_LR
        noise = float(rest[1]) if len(rest) > 1 else 0.0
        return float(budget), int(steps), float(weight), lr, noise
    except ValueError:
        message = (f"variant {text!r}: expected BUDGET:STEPS:HIDDEN_WEIGHT[:LR[:TOKEN_NOISE]], "
                   f"e.g. 0.7475:3000:1:1e-4 or 0.7475:3000:1:3e-4:0.15")
        raise argparse.ArgumentTypeError(message) from None


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", type=_variant, help="BUDGET:STEPS:HIDDEN_WEIGHT[:LR[:TOKEN_NOISE]]")
    parser.add_argument("--subsets", type=int, default=300, help="random 256-text subsets of the held-out pool")
    parser.add_argument("--calibration-sources", default=",".join(DEFAULT_SOURCES),
                        help="comma-separated corpus sources of the calibration pool (held-out sets: the defaults')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    return parser.parse_args(argv)


class _Sets:
    """bench/compaction.py's two held-out sets and the fp32 model's unit embeddings of each; the held-out pool."""

    def __init__(self, fp32: torch.nn.Module, tokenizer, split: CorpusSplit, subsets: int, seed: int) -> None:
        self.tokenizer = tokenizer
        self.texts = {"heldout_seed0": split.heldout,
                      "stdlib": load_split(0, SUBSET, seed=0, sources=["stdlib"]).heldout}
        self.reference = {name: self.embed(fp32, texts) for name, texts in self.texts.items()}
        self.pool = HeldoutPool(fp32, tokenizer, subsets, SUBSET, seed, BATCH, MAX_LENGTH)

    def embed(self, model: torch.nn.Module, texts: list[str]) -> np.ndarray:
        return unit_rows(encode(model, self.tokenizer, texts, BATCH, MAX_LENGTH).double().numpy())

    def fidelity(self, model: torch.nn.Module) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, texts in self.texts.items():
            ref, got = self.reference[name], self.embed(model, texts)
            out[name] = {"cos_mean": round(float((ref * got).sum(axis=1).mean()), 5),
                         "nn_agreement": round(agreement_on([np.arange(len(texts))], ref, got)[0], 4)}
        out["pool"] = self.pool.fidelity(model)
        return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    record = BenchRecord.start(argv)
    console = Console(width=150)
    torch.set_num_threads(args.threads)
    section = model_section("minilm")
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(512, SUBSET, seed=0)
    sets = _Sets(fp32, tokenizer, split, args.subsets, args.seed)
    pool_split = calibration_split(0, args.calibration_sources.split(","))
    calibration = TransformContext(tokenizer=tokenizer, calibration_texts=pool_split.calibration,
                                   batch_size=BATCH, max_length=MAX_LENGTH)
    costs = flops_costs(fp32, MAX_LENGTH)
    full = costs.model(layer_sizes(fp32))
    rows = []
    for budget, steps, weight, lr, noise in args.variants:
        config = CompactConfig(budget=budget, distill_steps=steps, distill_hidden_weight=weight, distill_lr=lr,
                               distill_token_noise=noise, seed=args.seed)
        model, build_s, reports = _compact(fp32, calibration, config)
        row = {"budget": budget, "distill_steps": steps, "distill_hidden_weight": weight, "distill_lr": lr,
               "distill_token_noise": noise,
               "kept_flops": round(costs.model(layer_sizes(model)) / full, 4), "build_s": round(build_s, 1),
               "distill": reports[-1].to_dict().get("distill"), **sets.fidelity(model)}
        rows.append(row)
        console.print(f"{budget}:{steps}:{weight}:{lr:g}:{noise:g}: set 1 cos "
                      f"{row['heldout_seed0']['cos_mean']:.5f} / NN {row['heldout_seed0']['nn_agreement']:.4f}; "
                      f"stdlib {row['stdlib']['cos_mean']:.5f} / "
                      f"{row['stdlib']['nn_agreement']:.4f}; pool {row['pool']['cos_mean']:.5f} / NN mean "
                      f"{row['pool']['nn_mean']:.4f} ({row['pool']['nn_p2_5']:.4f}-{row['pool']['nn_p97_5']:.4f}); "
                      f"built in {build_s:.0f} s")
    figures = {
        "bench": "distill_knobs",
        "model": "all-MiniLM-L6-v2 (real weights), mean-pooled embeddings, torch fp32 reference",
        "how": f"CompactConfig(budget, distill_steps, distill_hidden_weight, distill_lr, distill_token_noise), "
               f"importance act_weight, "
               f"re-fit and distillation on the whole calibration pool ({len(calibration.calibration_texts)} texts "
               f"of {', '.join(pool_split.sources)}), lr (default {DEFAULT_LR:g}) cosine to 0, 16 texts per "
               f"step; fidelity of the fp32 compacted model on bench/compaction.py's two "
               f"256-text held-out sets and on {args.subsets} random 256-text subsets of the held-out pool "
               f"({len(sets.pool.texts)} texts, seed {args.seed})",
        "rows": rows,
    }
    record.write(args.out, figures)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
