"""Export an Encoder to ONNX (``torch.onnx.export``, TorchScript exporter, opset 17) and find its Linears there.

Shape-generic: batch and sequence axes are dynamic. No layer size is assumed — each Linear is exported with its
own shape, so models whose layers differ in width (compacted heads / FFN) export the same way.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from icd.errors import ArtefactError
from icd.export.config_pbtxt import INPUT_NAMES
from icd.export.torchscript import example_inputs
from icd.model.encoder import Encoder

OPSET = 17


def with_eager_attention(encoder: Encoder) -> Encoder:
    """``encoder`` (changed in place, returned) switched to transformers' eager attention — MatMul, scale, additive
    mask, Softmax, MatMul — instead of its default SDPA: the same function, as a pattern OpenVINO's conversion fuses
    into one ``ScaledDotProductAttention`` operation per layer where nothing sits between the two products
    (BERT-style attention; MPNet's relative position bias keeps them apart)."""
    from icd.model.layout import bert_of

    bert_of(encoder).set_attn_implementation("eager")
    return encoder


def export_onnx(encoder: Encoder, path: Path, seq_len: int = 16) -> None:
    """Write ``encoder`` as ONNX to ``path`` (inputs ``input_ids``, ``attention_mask``; one output).

    Raises:
        ArtefactError: the exporter fails (one line with its reason).
    """
    vocab = int(encoder.bert.config.vocab_size)
    inputs = example_inputs(2, seq_len, vocab)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[encoder.output_name] = {0: "batch"}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        try:
            torch.onnx.export(encoder.eval(), inputs, str(path), dynamo=False, opset_version=OPSET,
                              input_names=list(INPUT_NAMES), output_names=[encoder.output_name],
                              dynamic_axes=axes, do_constant_folding=True)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ArtefactError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None


def scope_path(linear_name: str) -> str:
    """ONNX node scope of a Linear: ``encoder.layer.0.output.dense`` → ``encoder/layer.0/output/dense``
    (a ModuleList index stays attached to its list's name, as the TorchScript exporter writes it)."""
    return re.sub(r"\.(?!\d)", "/", linear_name)


def matmul_nodes(model_path: Path, linear_names: list[str]) -> dict[str, list[str]]:
    """``{Linear name: [MatMul / Gemm node names]}`` in the ONNX file (a smoothed Linear sits under ``.../inner``).

    Raises:
        ArtefactError: a Linear has no node (its name is not in the graph).
    """
    import onnx

    nodes = [n for n in onnx.load(str(model_path), load_external_data=False).graph.node
             if n.op_type in ("MatMul", "Gemm")]
    found: dict[str, list[str]] = {}
    for name in linear_names:
        scope = f"/{scope_path(name)}/"
        found[name] = [n.name for n in nodes if scope in n.name]
        if not found[name]:
            raise ArtefactError(f"ONNX graph has no MatMul for Linear {name!r} (scope {scope})")
    return found


ATTENTION_PRODUCTS = ("scores", "values")
"""Attention's two activation × activation products: ``scores`` (``Q·Kᵀ``) and ``values`` (``softmax·V``)."""
_SOFTMAX_DEPTH = 4
"""How many nodes up from a MatMul input a Softmax may be (exporters add casts, dropout, a NaN guard: Where(IsNaN))."""
_STOP = ("MatMul", "Shape")
"""The search goes no further up than another product or a shape computation."""


def activation_matmuls(model_path: Path, products: Sequence[str] = ATTENTION_PRODUCTS) -> list[str]:
    """Names of the MatMul nodes whose inputs are both computed (no weight) — attention's products — of the kinds in
    ``products``: ``values`` when a Softmax feeds one of its inputs (within a few nodes, not through another MatMul or
    a shape computation), else ``scores``.

    Raises:
        ValueError: a kind not in :data:`ATTENTION_PRODUCTS`.
    """
    import onnx

    unknown = sorted(set(products) - set(ATTENTION_PRODUCTS))
    if unknown:
        raise ValueError(f"attention products {unknown}: expected some of {list(ATTENTION_PRODUCTS)}")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
    producer = {out: node for node in graph.node for out in node.output}

    def after_softmax(node) -> bool:
        frontier = [producer[t] for t in node.input if t in producer]
        for _ in range(_SOFTMAX_DEPTH):
            if any(n.op_type == "Softmax" for n in frontier):
                return True
            frontier = [producer[t] for n in frontier if n.op_type not in _STOP for t in n.input if t in producer]
        return False

    names = []
    for node in graph.node:
        if node.op_type == "MatMul" and not constants.intersection(node.input):
            kind = "values" if after_softmax(node) else "scores"
            if kind in products:
                names.append(node.name)
    return names
