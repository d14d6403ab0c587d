"""GPU truth for structured compaction: does a compacted BERT-base (fewer heads, fewer FFN neurons) run faster?

Needs only torch and bench/gpu_timing.py beside it, so the two can be copied to any GPU host:

    python bench/gpu_compaction.py [--batches 8,32,128] [--seq 128] [--iters 50] [--compile] [--out FILE.json]

Structured compaction (docs/transforms.md, ``icd/transforms/compact.py``) turns a model into a *smaller dense* one:
per layer, fewer attention heads (each 64 wide) and fewer FFN neurons; hidden size and layer count unchanged. Its
speed depends on those shapes only, so this script measures the shapes: a 12-layer post-LayerNorm encoder built
from torch ops (Q/K/V/O Linears, ``F.scaled_dot_product_attention``, GELU FFN, LayerNorms — BERT-base's
computation), **random weights**, fp16, eval, for BERT-base (12 heads, 3072 neurons) and compacted shapes with the
same heads / neurons kept in every layer. Timing: CUDA events, median and p95 of ``--iters`` calls after warm-up,
eager (each kernel launched from Python) and replayed as one CUDA graph (no launch cost: what a served model with
CUDA graphs or TensorRT pays), optionally under ``torch.compile``. Prints one JSON document (command, machine, date, load average included); on a
machine without CUDA it prints ``{"status": "no CUDA: not measured"}`` and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from gpu_timing import cuda_missing, emit, measure, measured_document

HIDDEN, LAYERS, HEAD_DIM, FFN = 768, 12, 64, 3072
SHAPES = {  # name: (heads kept per layer, FFN neurons kept per layer); neuron counts multiples of 128 but one
    "bert_base": (12, 3072),
    "ffn_2432": (12, 2432),
    "ffn_1792": (12, 1792),
    "ffn_1843_unaligned": (12, 1843),
    "ffn_1536": (12, 1536),
    "heads_8_ffn_1792": (8, 1792),
    "heads_6_ffn_1536": (6, 1536),
}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dense BERT-base vs compacted shapes on GPU (fp16)")
    parser.add_argument("--batches", default="8,32,128", help="batch sizes, comma-separated")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (default mode)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def _encoder(heads: int, ffn: int) -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inner = heads * HEAD_DIM
            self.qkv = nn.Linear(HIDDEN, 3 * inner)
            self.out = nn.Linear(inner, HIDDEN)
            self.ln1 = nn.LayerNorm(HIDDEN)
            self.up = nn.Linear(HIDDEN, ffn)
            self.down = nn.Linear(ffn, HIDDEN)
            self.ln2 = nn.LayerNorm(HIDDEN)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            batch, seq, _ = x.shape
            q, k, v = self.qkv(x).view(batch, seq, 3, heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            x = self.ln1(x + self.out(attn.transpose(1, 2).reshape(batch, seq, heads * HEAD_DIM)))
            return self.ln2(x + self.down(F.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x, bias)
            return x

    return Encoder()


def _flops(heads: int, ffn: int, tokens: int, seq: int) -> float:
    """Multiply-adds x 2 of the encoder's matrix products (Linears and attention), per forward."""
    inner = heads * HEAD_DIM
    linears = 2 * tokens * (HIDDEN * 3 * inner + inner * HIDDEN + 2 * HIDDEN * ffn)
    attention = 2 * 2 * tokens * seq * inner
    return float(LAYERS * (linears + attention))


def _graphed(model: Any, x: Any, bias: Any) -> Callable[[], Any]:
    """The forward as one CUDA graph (no per-kernel launch cost), captured at the first call (timed as
    ``first_call_s``, its errors reported by :func:`gpu_timing.measure`); later calls replay it."""
    import torch

    graphs: list[Any] = []

    def run() -> None:
        if not graphs:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    model(x, bias)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(x, bias)
            graphs.append(graph)
        graphs[0].replay()

    return run


def _rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    rows = []
    for batch in [int(b) for b in args.batches.split(",") if b]:
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(batch, args.seq, HIDDEN, device="cuda", dtype=torch.float16, generator=gen)
        bias = torch.zeros(batch, 1, 1, args.seq, device="cuda", dtype=torch.float16)  # no padding
        base_ms: dict[str, float | None] = {}
        for name, (heads, ffn) in SHAPES.items():
            torch.manual_seed(0)
            model = _encoder(heads, ffn).half().cuda().eval()
            row: dict[str, Any] = {"shape": name, "batch": [batch, args.seq], "heads_per_layer": heads,
                                   "ffn_per_layer": ffn,
                                   "flops_share": _flops(heads, ffn, batch * args.seq, args.seq)
                                   / _flops(12, FFN, batch * args.seq, args.seq)}
            with torch.inference_mode():
                row["eager"] = measure("eager", lambda: model(x, bias), args)
                row["cuda_graph"] = measure("cuda_graph", _graphed(model, x, bias), args)
                if args.compile:
                    compiled = torch.compile(model)
                    row["compiled"] = measure("compiled", lambda: compiled(x, bias), args)
            if name == "bert_base":
                base_ms = {key: row.get(key, {}).get("median_ms") for key in ("eager", "cuda_graph", "compiled")}
            for key, base in base_ms.items():
                got = row.get(key, {}).get("median_ms")
                if got and base:
                    row[key]["speedup_vs_bert_base"] = base / got
            rows.append(row)
            print(f"[{name} b{batch}] done", file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    header = {
        "dtype": "float16",
        "model": "12-layer post-LayerNorm encoder from torch ops, hidden 768, heads of 64, BERT-base's computation; "
                 "random weights (speed depends on the shapes only); the same heads / FFN neurons kept in every layer",
        "timing": f"CUDA events, median / p95 of {args.iters} calls after {args.warmup} warm-up calls",
    }
    doc = cuda_missing() or measured_document("gpu_compaction.py", argv, header,
                                              lambda d: d.update(rows=_rows(args)))
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
