"""Shapes a GPU serves slowly: fp16 / bf16 tensor cores want every matrix dimension a multiple of 8.

Measured on an H200 (docs/gpu.md, ``bench/results/gpu_compaction.json``): a BERT-base-shaped encoder whose FFNs
keep 1843 neurons ran at 0.46x of the uncompacted model, while 1792 ran at 1.21x. A compacted model exported for
``--target gpu`` is checked here; the export goes on and says which layers are affected and what to do.

Example:
    >>> gpu_shape_warning(model)  # doctest: +SKIP
    '2 Linear layer(s) of the encoder have a width that is not a multiple of 8 ...'
"""

from __future__ import annotations

from torch import nn

TENSOR_CORE_MULTIPLE = 8
"""Matrix dimensions fp16 / bf16 tensor-core kernels need to be a multiple of."""
SHOWN = 3
"""Layers named in the warning (the count says how many in all)."""


def unaligned_linears(model: nn.Module, multiple: int = TENSOR_CORE_MULTIPLE) -> list[str]:
    """``name (out x in)`` of every Linear of ``model`` with a dimension that is not a multiple of ``multiple``."""
    return [f"{name} ({module.out_features} x {module.in_features})" for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and (module.in_features % multiple or module.out_features % multiple)]


def gpu_shape_warning(encoder: nn.Module) -> str | None:
    """A warning naming the encoder's Linears (the task head aside) that tensor cores run slowly; None if none.

    ``encoder`` is an :class:`icd.model.encoder.Encoder` (its ``base`` is checked: a classifier's few outputs are
    not a cost) or any module.
    """
    base = getattr(encoder, "base", encoder)
    found = unaligned_linears(base)
    if not found:
        return None
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    return (f"{len(found)} Linear layer(s) of the encoder have a width that is not a multiple of "
            f"{TENSOR_CORE_MULTIPLE}, which GPU tensor cores run slowly (a 1843-wide FFN ran at 0.46x of the "
            f"uncompacted model on an H200: docs/gpu.md): {', '.join(found[:SHOWN])}{more}; for a GPU target "
            f"compact with CompactConfig(ffn_multiple=64)")
