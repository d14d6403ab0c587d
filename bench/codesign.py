"""Co-design benchmark: fidelity and CPU latency of sparse / int8 variants of MiniLM-L6 (real weights).

Every variant is compared with the fp32 model on held-out docstrings (default corpus: stdlib + package docstrings) (never the calibration texts):
mean-pooled embeddings, mean / min cosine, nearest-neighbour agreement (icd.measure.fidelity). Latency is the
in-process median of one batch (default 8×128) with fixed torch threads (icd.measure.latency); speedup is the fp32
median divided by the variant's, all models timed in interleaved rounds in the same process (each row records the 1-minute load average:
on a shared machine latency is only comparable within one run). 2:4 weights are stored dense here (no sparse CPU
kernel), so their latency shows what N:M costs or buys on this CPU: nothing, until a sparse kernel runs them.

2:4 variants (all 36 encoder Linears, one-shot, no training):

* ``magnitude_2of4_all`` / ``wanda_2of4_all`` — mask by |w| / |w|·‖x‖;
* ``sparsegpt_2of4_all`` — SparseGPT as published (mask + OBS reconstruction), sequential, error feedback
  (``refit=False``: the method before the exact re-fit);
* ``icd_2of4_all`` — ``NMSparsityConfig`` defaults (SparseGPT mask, exact per-row least-squares re-fit, …), no
  permutation;
* ``icd_2of4_linear`` / ``icd_2of4_iterative`` — the same transform after icd's channel permutations
  (``icd run`` in linear / iterative mode: permutations searched for what the 2:4 mask keeps, folded, then
  pruned; iterative re-permutes whole groups after pruning and accepts or rolls back). Their ``efficacy_mean`` is
  the mean N:M efficacy (percent) of the permutations searched in the solve stage.

Writes bench/results/codesign.json: a list of
``{variant, efficacy_mean, cos_mean, cos_min, nn_agreement, latency_ms, speedup, ...}`` (efficacy_mean is null
where no permutation is applied) and prints a table.

Usage:
    .venv/bin/python bench/codesign.py [--calibration 800] [--heldout 256] [--variants fp32,icd_2of4_all]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from icd.config import load_config
from icd.config.schema import ModelSection
from icd.data.corpus import load_split
from icd.io.atomic import write_json_atomic
from icd.io.bench_result import BenchRecord
from icd.measure.encode import encode
from icd.measure.fidelity import Fidelity, fidelity
from icd.measure.latency import Latency, measure_latency_interleaved
from icd.model.loader import load_encoder, load_tokenizer
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import Int8Config, NMSparsityConfig

DEFAULT_OUT = Path(__file__).parent / "results" / "codesign.json"
PIPELINE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "minilm.json"
Builder = Callable[[nn.Module, TransformContext], nn.Module]
# SparseGPT as it was before the exact re-fit (kept reportable as the baseline).
SPARSEGPT_PLAIN = {"refit": False, "mask_rounds": 0, "bias_correction": False, "residual_feedback": False,
                   "layernorm_correction": False}


@dataclass(frozen=True)
class Variant:
    """A named way to turn the fp32 model into a candidate (on a deep copy)."""

    name: str
    build: Builder
    note: str


def _nm(method: str, **options: object) -> Builder:
    def build(fp32: nn.Module, ctx: TransformContext) -> nn.Module:
        model = copy.deepcopy(fp32)
        optimize_(model, NMSparsityConfig(n=2, m=4, scope="all", method=method, **options), ctx)
        return model

    return build


@dataclass
class PipelineSettings:
    """What a permuted variant's ``icd run`` must share with this bench (same split, same batches)."""

    calibration: int = 800
    heldout: int = 256
    batch_size: int = 32
    max_length: int = 128
    threads: int = 2


PIPELINE = PipelineSettings()
# efficacy_mean of the permuted variants built in this process (variant name -> percent)
EFFICACY: dict[str, float | None] = {}


def _permuted_nm(mode: str, name: str) -> Builder:
    """``icd run`` of configs/minilm.json in ``mode`` with the default 2:4 transform on every encoder Linear; the
    model it returns is the run's final one (outputs in the original channel order)."""

    def build(_fp32: nn.Module, _ctx: TransformContext) -> nn.Module:
        from icd.pipeline.runner import run_config

        transform = json.dumps([{"type": "nm_sparsity", "n": 2, "m": 4, "scope": "all"}])
        overrides = [f"transforms={transform}", f"pipeline.mode={mode}",
                     f"data.calibration_texts={PIPELINE.calibration}", f"data.heldout_texts={PIPELINE.heldout}",
                     f"data.batch_size={PIPELINE.batch_size}", "data.seed=0", f"model.max_length={PIPELINE.max_length}",
                     "measure.latency.runs=1", "measure.latency.warmup=0",
                     f"measure.latency.threads={PIPELINE.threads}"]
        cfg = load_config(str(PIPELINE_CONFIG), overrides)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_config(cfg, Path(tmp) / "run", progress=False)
        efficacies = [float(s.solver["efficacy"]) for s in result.solutions.values() if "efficacy" in s.solver]
        EFFICACY[name] = sum(efficacies) / len(efficacies) if efficacies else None
        assert result.runtime is not None
        return result.runtime.encoder

    return build


def _torch_dynamic_int8(fp32: nn.Module, _ctx: TransformContext) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8)


def _faithful_int8(fp32: nn.Module, ctx: TransformContext) -> nn.Module:
    model = copy.deepcopy(fp32)
    optimize_(model, Int8Config(), ctx)
    return model


def variants() -> list[Variant]:
    """Every variant this bench knows, in table order."""
    out = [
        Variant("fp32", lambda fp32, _ctx: fp32, "reference model"),
        Variant("magnitude_2of4_all", _nm("magnitude"), "2:4 on all 36 encoder Linears, largest |w| per group"),
        Variant("wanda_2of4_all", _nm("wanda", bias_correction=False),
                "2:4 all, |w|·‖x‖ scores, sequential calibration"),
        Variant("sparsegpt_2of4_all", _nm("sparsegpt", **SPARSEGPT_PLAIN),
                "2:4 all, SparseGPT mask + OBS reconstruction, sequential, error feedback to dense outputs"),
        Variant("icd_2of4_all", _nm("sparsegpt"),
                "2:4 all, NMSparsityConfig defaults (SparseGPT mask + exact least-squares re-fit), no permutation"),
        Variant("icd_2of4_linear", _permuted_nm("linear", "icd_2of4_linear"),
                "icd run linear: N:M-objective channel permutations folded, then icd_2of4_all's transform"),
        Variant("icd_2of4_iterative", _permuted_nm("iterative", "icd_2of4_iterative"),
                "icd run iterative: linear, then whole-group re-permutation after pruning (accept / roll back)"),
        Variant("torch_dynamic_int8_all", _torch_dynamic_int8, "torch quantize_dynamic on every Linear"),
    ]
    try:
        import icd.transforms.int8  # noqa: F401  (registers the Int8Config handler)
    except ImportError:
        return out
    out.append(Variant("icd_int8", _faithful_int8, "icd Int8Config() defaults (smoothing, measured fp32 keeps)"))
    return out


def _row(name: str, fid: Fidelity, lat: Latency, base_ms: float, build_s: float, note: str) -> dict[str, object]:
    return {
        "variant": name,
        "efficacy_mean": None if EFFICACY.get(name) is None else round(float(EFFICACY[name]), 3),  # type: ignore[arg-type]
        "cos_mean": round(fid.cos_mean, 6),
        "cos_min": round(fid.cos_min, 6),
        "nn_agreement": round(fid.nn_agreement, 6),
        "latency_ms": round(lat.median_ms, 3),
        "latency_p95_ms": round(lat.p95_ms, 3),
        "speedup": round(base_ms / lat.median_ms, 3),
        "build_s": round(build_s, 1),
        "note": note,
    }


def _print(rows: list[dict[str, object]], console: Console) -> None:
    table = Table(title="codesign: MiniLM-L6 vs fp32 (held-out texts)")
    columns = ("variant", "efficacy_mean", "cos_mean", "cos_min", "nn_agreement", "latency_ms", "speedup", "build_s")
    for col in columns:
        table.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=800, help="calibration texts (never evaluated on)")
    parser.add_argument("--heldout", type=int, default=256, help="held-out texts for fidelity (>= 256 for the issue)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per calibration / encode batch")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--latency-batch", type=int, default=8)
    parser.add_argument("--latency-seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    record = BenchRecord.start(None if argv is None else ["bench/codesign.py", *argv])
    console = Console(width=140)
    known = {v.name: v for v in variants()}
    wanted = [n for n in args.variants.split(",") if n] or list(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        console.print(f"unknown variant(s) {unknown}; known: {list(known)}")
        return 2
    torch.set_num_threads(args.threads)
    PIPELINE.calibration, PIPELINE.heldout, PIPELINE.batch_size = args.calibration, args.heldout, args.batch_size
    PIPELINE.max_length, PIPELINE.threads = args.max_length, args.threads
    section = ModelSection()
    fp32, tokenizer = load_encoder(section), load_tokenizer(section)
    split = load_split(args.calibration, args.heldout, seed=0)
    ctx = TransformContext(tokenizer=tokenizer, calibration_texts=split.calibration,
                           batch_size=args.batch_size, max_length=args.max_length)
    ref = encode(fp32, tokenizer, split.heldout, args.batch_size, args.max_length)

    models: dict[str, nn.Module] = {"fp32": fp32}
    measured: dict[str, tuple[Fidelity, float]] = {}
    for name in wanted:
        start = time.perf_counter()
        models[name] = known[name].build(fp32, ctx)
        build_s = time.perf_counter() - start
        fid = fidelity(ref, encode(models[name], tokenizer, split.heldout, args.batch_size, args.max_length))
        measured[name] = (fid, build_s)
        console.print(f"{name}: cos_mean {fid.cos_mean:.4f} min {fid.cos_min:.4f} nn {fid.nn_agreement:.3f} "
                      f"(build {build_s:.1f} s)")
    console.print(f"latency: {len(models)} models interleaved, {args.runs} rounds")
    lat = measure_latency_interleaved(models, args.latency_batch, args.latency_seq, args.warmup, args.runs,
                                      args.threads)
    base = lat["fp32"]
    rows = [_row(name, fid, lat[name], base.median_ms, build_s, known[name].note)
            for name, (fid, build_s) in measured.items()]
    provenance = record.provenance()  # command, machine, date, load average (start / end), versions
    for row in rows:
        row.update(calibration_texts=len(split.calibration), heldout_texts=len(split.heldout),
                   latency_how=base.how, torch=torch.__version__, **provenance)
    write_json_atomic(args.out, rows)
    _print(rows, console)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
