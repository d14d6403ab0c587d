"""GPU truth for 2:4 sparsity: dense fp16 vs torch semi-structured sparse (cuSPARSELt), per Linear and whole model.

Needs only torch + transformers and bench/gpu_timing.py beside it, so the two can be copied to any GPU host:

    python bench/gpu_sparse.py [--batch 32] [--seq 128] [--iters 50] [--no-compile] [--out gpu_sparse.json]

BERT-base shapes from ``transformers.BertConfig()`` (random weights, magnitude 2:4 applied to every encoder Linear
so dense and sparse compute the same function), fp16, eval, batch 32x128. Per Linear: ``F.linear`` with the dense
pruned weight vs the same weight as ``to_sparse_semi_structured`` (cuSPARSELt backend:
``SparseSemiStructuredTensor._FORCE_CUTLASS = False``), each eager and under ``torch.compile``; plus
``torch._cslt_sparse_mm`` with the algorithm picked by ``torch._cslt_sparse_mm_search`` (a cached plan) where this
torch has it. Whole model: the same, dense vs every encoder Linear semi-structured. Timing: CUDA events, median
and p95 of ``--iters`` calls after warm-up. Prints one JSON document; every path that fails says why instead of a
number. On a machine without CUDA it prints ``{"status": "no CUDA: not measured"}`` and exits 0.
"""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from gpu_timing import cuda_missing, emit, measure, measured_document


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dense vs 2:4 semi-structured sparse on GPU (BERT-base shapes)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iters", type=int, default=50, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode for the compiled variants")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def prune_2_4_(weight: Any) -> None:
    """Magnitude 2:4 along the input dimension, in place (keep the 2 largest |w| of every 4 columns)."""
    import torch

    rows, cols = weight.shape
    groups = weight.detach().reshape(rows, cols // 4, 4)
    keep = groups.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    with torch.no_grad():
        weight.copy_((groups * mask).reshape(rows, cols))


def _speedups(result: dict[str, Any], dense_key: str) -> None:
    dense = result.get(dense_key, {}).get("median_ms")
    for key, value in list(result.items()):
        if key != dense_key and isinstance(value, dict) and "median_ms" in value and dense:
            value["speedup_vs_dense"] = dense / value["median_ms"]


def _per_linear(args: argparse.Namespace, config: Any) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F
    from torch.sparse import to_sparse_semi_structured

    hidden, inter = config.hidden_size, config.intermediate_size
    shapes = {"attention q/k/v/o": (hidden, hidden), "ffn in (W1)": (inter, hidden), "ffn out (W2)": (hidden, inter)}
    tokens = args.batch * args.seq
    out = []
    for label, (n_out, n_in) in shapes.items():
        weight = torch.randn(n_out, n_in, device="cuda", dtype=torch.float16)
        prune_2_4_(weight)
        bias = torch.randn(n_out, device="cuda", dtype=torch.float16)
        x = torch.randn(tokens, n_in, device="cuda", dtype=torch.float16)
        sparse_w = to_sparse_semi_structured(weight)
        row: dict[str, Any] = {"linear": label, "weight": [n_out, n_in], "input": [tokens, n_in]}
        with torch.inference_mode():
            reference = F.linear(x, weight, bias)
            row["max_abs_diff_sparse_vs_dense"] = float((F.linear(x, sparse_w, bias) - reference).abs().max())
            row["dense"] = measure("dense", lambda: F.linear(x, weight, bias), args)
            row["semi_structured"] = measure("semi_structured", lambda: F.linear(x, sparse_w, bias), args)
            row["cslt_searched_plan"] = _cslt_with_plan(x, weight, bias, args)
            if not args.no_compile:
                dense_c = torch.compile(lambda a: F.linear(a, weight, bias), mode=args.compile_mode)
                sparse_c = torch.compile(lambda a: F.linear(a, sparse_w, bias), mode=args.compile_mode)
                row["dense_compiled"] = measure("dense_compiled", lambda: dense_c(x), args)
                row["semi_structured_compiled"] = measure("semi_structured_compiled", lambda: sparse_c(x), args)
        _speedups(row, "dense")
        out.append(row)
        print(f"[per-linear] {label}: done", file=sys.stderr, flush=True)
    return out


def _cslt_with_plan(x: Any, weight: Any, bias: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``W x^T`` through ``torch._cslt_sparse_mm`` with the algorithm ``_cslt_sparse_mm_search`` picked."""
    import torch

    if not (hasattr(torch, "_cslt_compress") and hasattr(torch, "_cslt_sparse_mm")):
        return {"error": "torch._cslt_compress / _cslt_sparse_mm not in this torch"}
    try:
        compressed = torch._cslt_compress(weight)
        xt = x.t().contiguous()
        alg_id = 0
        if hasattr(torch, "_cslt_sparse_mm_search"):
            found = torch._cslt_sparse_mm_search(compressed, xt)
            alg_id = int(found[0] if isinstance(found, tuple) else found)
    except (RuntimeError, TypeError) as exc:
        return {"error": f"cslt setup: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    result = measure("cslt_searched_plan", lambda: torch._cslt_sparse_mm(compressed, xt, bias, alg_id=alg_id), args)
    result["alg_id"] = alg_id
    return result


def _whole_model(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    import copy

    import torch
    from torch import nn
    from torch.sparse import to_sparse_semi_structured
    from transformers import BertModel

    torch.manual_seed(0)
    dense = BertModel(config, add_pooling_layer=False).half().cuda().eval()
    for name, module in dense.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder."):
            prune_2_4_(module.weight)
    sparse = copy.deepcopy(dense)
    converted = 0
    for name, module in sparse.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder."):
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight), requires_grad=False)
            converted += 1
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (args.batch, args.seq), device="cuda", generator=gen)
    mask = torch.ones_like(ids)
    out: dict[str, Any] = {"sparse_linears": converted, "batch": [args.batch, args.seq]}
    with torch.inference_mode():
        ref = dense(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        got = sparse(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        out["cos_sparse_vs_dense"] = float(torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0))
        out["dense"] = measure("dense", lambda: dense(input_ids=ids, attention_mask=mask), args)
        out["semi_structured"] = measure("semi_structured", lambda: sparse(input_ids=ids, attention_mask=mask), args)
        if not args.no_compile:
            dense_c = torch.compile(dense, mode=args.compile_mode)
            sparse_c = torch.compile(sparse, mode=args.compile_mode)
            out["dense_compiled"] = measure("dense_compiled", lambda: dense_c(input_ids=ids, attention_mask=mask), args)
            out["semi_structured_compiled"] = measure(
                "semi_structured_compiled", lambda: sparse_c(input_ids=ids, attention_mask=mask), args)
    _speedups(out, "dense")
    print("[whole-model] done", file=sys.stderr, flush=True)
    return out


def _measure_all(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    import torch
    from torch.sparse import SparseSemiStructuredTensor
    from transformers import BertConfig

    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # cuSPARSELt backend
    config = BertConfig()
    doc.update({"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform()})
    doc["per_linear"] = _per_linear(args, config)
    doc["whole_model"] = _whole_model(args, config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    header = {
        "dtype": "float16", "shapes": "BertConfig() (BERT-base: hidden 768, FFN 3072, 12 layers), random weights, "
                                      "magnitude 2:4 on every encoder Linear",
        "backend": "cuSPARSELt (SparseSemiStructuredTensor._FORCE_CUTLASS = False)",
        "timing": f"CUDA events, median / p95 of {args.iters} calls after {args.warmup} warm-up calls",
        "compile_mode": None if args.no_compile else args.compile_mode,
    }
    doc = cuda_missing() or measured_document("gpu_sparse.py", argv, header, lambda d: _measure_all(args, d))
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
