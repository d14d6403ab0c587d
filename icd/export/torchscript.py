"""Trace an :class:`icd.model.encoder.Encoder` to TorchScript (``model.pt``) and check the trace.

The trace takes ``(input_ids, attention_mask)`` (int64, ``[batch, seq]``) and returns the output tensor. It is
traced at one shape and checked at *other* shapes (batch and sequence length, with padding) against the eager
model, so a shape frozen into the graph is caught at export, not in production.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from icd.errors import ArtefactError
from icd.io.atomic import atomic_open
from icd.model.encoder import Encoder

TRACE_TOLERANCE = 1e-5
_CHECK_SHAPES = ((1, 7), (3, 19))


def example_inputs(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and a mask with right padding on every other row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, seq_len), generator=generator, dtype=torch.long)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[1::2, seq_len // 2 + 1 :] = 0
    ids[mask == 0] = 0
    return ids, mask


def trace_encoder(encoder: Encoder, seq_len: int = 16) -> torch.jit.ScriptModule:
    """TorchScript of ``encoder`` (eval mode, CPU), checked at other shapes within :data:`TRACE_TOLERANCE`.

    Raises:
        ArtefactError: the trace does not reproduce the eager model.
    """
    encoder = encoder.eval()
    vocab = int(encoder.bert.config.vocab_size)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Shape-dependent Python branches warn here; the checks below at other shapes are the real guard.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(encoder, example_inputs(2, seq_len, vocab), check_trace=False, strict=False)
        for batch, length in _CHECK_SHAPES:
            inputs = example_inputs(batch, length, vocab, seed=batch)
            expected, got = encoder(*inputs), traced(*inputs)
            if got.shape != expected.shape or not torch.allclose(got, expected, atol=TRACE_TOLERANCE, rtol=0):
                diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
                raise ArtefactError(
                    f"TorchScript trace differs from the eager model at shape {batch}x{length} (max |diff| {diff:.2e})"
                )
    return traced


def save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    """Write ``module`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        torch.jit.save(module, handle)
