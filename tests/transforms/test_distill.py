"""Distillation after compaction, on tiny random encoders of every family: it lowers the error against the model
the student was cut from, trains what it says it trains, leaves the teacher alone, and refuses bad settings."""

from __future__ import annotations

import copy

import pytest
import torch

from icd.measure.encode import Batch
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.compact import apply_compact
from icd.transforms.configs import CompactConfig
from icd.transforms.distill import DistillSettings, distill_
from tests.model.tiny import FAMILY_TYPES, outputs, random_batches, tiny_encoder


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    return random_batches(seed=2, padded_row=1, padded_from=7)


def _error(model, reference, batches) -> float:
    out = outputs(model, batches)
    return float((1 - torch.nn.functional.cosine_similarity(out, reference, dim=-1)).mean())


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_distillation_lowers_the_error_against_the_teacher(model_type, batches):
    teacher = tiny_encoder(model_type=model_type)
    before = copy.deepcopy(teacher.state_dict())
    student = copy.deepcopy(teacher)
    units = "ffn" if model_type == "mpnet" else "both"
    cut = CompactConfig(budget=0.5 if units == "both" else 0.8, units=units, min_ffn=8, reconstruct=False)  # a large error to take back
    apply_compact(student, cut, TransformContext(batches=batches))
    reference = outputs(teacher, batches)
    cut_only = _error(student, reference, batches)
    embeddings = {k: v.clone() for k, v in student.state_dict().items() if "embeddings" in k}
    flags = {k: p.requires_grad for k, p in student.named_parameters()}
    report = distill_(student, teacher, batches, DistillSettings(steps=40, lr=1e-3), progress=False)
    assert _error(student, reference, batches) < cut_only
    assert report.loss_last < report.loss_first
    assert report.steps == 40 and report.trained_parameters > 0
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"teacher changed: {key}"
    for key, value in student.state_dict().items():
        if key in embeddings:
            assert torch.equal(value, embeddings[key]), f"embeddings trained: {key}"
    assert {k: p.requires_grad for k, p in student.named_parameters()} == flags


def test_compact_config_distills_and_reports_it(batches):
    encoder = tiny_encoder()
    plain, distilled = copy.deepcopy(encoder), copy.deepcopy(encoder)
    plain_ctx, ctx = TransformContext(batches=batches), TransformContext(batches=batches)
    optimize_(plain, CompactConfig(ffn_keep=0.25, heads_keep=0.5, reconstruct=False), plain_ctx)
    optimize_(distilled, CompactConfig(ffn_keep=0.25, heads_keep=0.5, reconstruct=False, distill_steps=30,
                                           distill_lr=1e-3), ctx)
    report = ctx.applied[-1].result.to_dict()
    assert report["distill"]["steps"] == 30 and report["seconds"]["distill"] > 0
    assert plain_ctx.applied[-1].result.to_dict()["distill"] is None
    reference = outputs(encoder, batches)
    assert _error(distilled, reference, batches) < _error(plain, reference, batches)


def test_same_settings_same_student(batches):
    teacher = tiny_encoder()
    students = []
    for _ in range(2):
        student = copy.deepcopy(teacher)
        apply_compact(student, CompactConfig(ffn_keep=0.5), TransformContext(batches=batches))
        distill_(student, teacher, batches, DistillSettings(steps=6, lr=1e-3, seed=3), progress=False)
        students.append(outputs(student, batches))
    torch.testing.assert_close(students[0], students[1])


@pytest.mark.parametrize("field, value, message", [
    ("distill_steps", -1, "greater than or equal to 0"),
    ("distill_lr", 0.0, "greater than 0"),
    ("distill_batch_size", 0, "greater than or equal to 1"),
    ("distill_hidden_weight", -0.5, "greater than or equal to 0"),
])
def test_bad_distill_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        CompactConfig(budget=0.8, **{field: value})


def test_distill_needs_batches_and_steps():
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="no calibration batches"):
        distill_(encoder, copy.deepcopy(encoder), [], DistillSettings(steps=3))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        distill_(encoder, copy.deepcopy(encoder), [Batch(torch.ones(1, 3, dtype=torch.long),
                                                         torch.ones(1, 3, dtype=torch.long))], DistillSettings(steps=0))
