"""Check an exported artefact against the in-process model (what Triton Model Navigator calls correctness).

Two checks, on held-out texts of the run's split:

1. **same precision**: the artefact vs the in-process torch model of the same precision (fp32: the run's fp32
   Encoder; torchscript int8: icd's int8 Encoder) — max |diff| and minimum cosine within tolerance. Precisions
   whose quantizer is the runtime's own (ONNX Runtime / OpenVINO int8, OpenVINO bf16) have no in-process torch
   twin: only check 2 applies, and the record says so.
2. **vs fp32**: cos mean / min and NN agreement against the run's fp32 model; cos mean below the floor fails.

A failure raises :class:`icd.errors.ArtefactError` naming the runtime and the check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from icd.errors import ArtefactError
from icd.runtimes.base import Precision, Session
from icd.runtimes.source import ModelSource

MAX_ABS_DIFF = {Precision.FP32: 1e-3, Precision.INT8: 1e-4}
MIN_COS_SAME = 0.99999
VERIFY_TEXTS = 16
DEFAULT_MIN_COS_FP32 = 0.99


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_session` (JSON-ready with :meth:`to_dict`)."""

    variant: str
    texts: int
    inputs: str
    same_precision_reference: str | None
    max_abs_diff: float | None
    cos_min_same: float | None
    cos_mean_fp32: float
    cos_min_fp32: float
    nn_agreement_fp32: float
    min_cos_fp32: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _torch_twin(source: ModelSource, precision: Precision, runtime: str, output_gather: bool):
    if precision == Precision.FP32 or (precision == Precision.INT8 and runtime == "torchscript"):
        return source.torch_encoder(precision, output_gather)
    return None


def _outputs_fn(source: ModelSource, texts: list[str], batch_size: int) -> tuple[Any, str]:
    """``run(model) -> outputs`` on the held-out texts, or — for a model whose vocabulary is smaller than the
    tokenizer's (random-weight ``bert_config`` shapes) — on seeded random token ids with padding."""
    from icd.measure.encode import encode

    vocab = int(source.fp32.bert.config.vocab_size)
    if source.tokenizer is not None and len(source.tokenizer) <= vocab:
        return (lambda model: encode(model, source.tokenizer, texts, batch_size, source.max_length)), "held-out texts"
    from icd.export.torchscript import example_inputs

    batches = [example_inputs(batch_size, 24, vocab, seed=seed) for seed in range(max(1, len(texts) // batch_size))]

    def run(model):
        with torch.inference_mode():
            return torch.cat([model(ids, mask).float() for ids, mask in batches])

    return run, "random token ids (the model's vocabulary is smaller than the tokenizer's)"


def verify_session(session: Session, source: ModelSource, texts: list[str], *, output_gather: bool,
                   min_cos_fp32: float = DEFAULT_MIN_COS_FP32, batch_size: int = 8) -> Verification:
    """Run ``session`` on ``texts`` and compare (see the module docstring).

    Raises:
        ArtefactError: a check fails (one line: runtime, check, figure, tolerance).
    """
    from icd.measure.fidelity import fidelity

    variant = session.variant
    outputs, inputs = _outputs_fn(source, texts, batch_size)
    got = outputs(session)
    fp32 = outputs(source.torch_encoder(Precision.FP32, output_gather))
    twin = _torch_twin(source, variant.precision, variant.runtime, output_gather)
    diff = cos_same = None
    if twin is not None:
        expected = fp32 if variant.precision == Precision.FP32 else outputs(twin)
        diff = float((got - expected).abs().max())
        cos_same = float(torch.nn.functional.cosine_similarity(got.double(), expected.double(), dim=1).min())
        tolerance = MAX_ABS_DIFF[variant.precision]
        if not (diff <= tolerance and cos_same >= MIN_COS_SAME):
            raise ArtefactError(
                f"{variant.name}: verification failed: exported artefact differs from the in-process {variant.precision.value} "
                f"model (max |diff| {diff:.2e}, tolerance {tolerance:.0e}; min cosine {cos_same:.6f}, "
                f"needs {MIN_COS_SAME})")
    fid = fidelity(fp32, got)
    if not fid.cos_mean >= min_cos_fp32:
        raise ArtefactError(f"{variant.name}: verification failed: cos mean vs fp32 {fid.cos_mean:.5f} < "
                            f"{min_cos_fp32} over {got.shape[0]} inputs ({inputs})")
    return Verification(variant.name, int(got.shape[0]), inputs,
                        None if twin is None else f"torch {variant.precision.value}",
                        diff, cos_same, fid.cos_mean, fid.cos_min, fid.nn_agreement, min_cos_fp32)
