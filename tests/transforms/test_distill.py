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
from icd.transforms.distill import DistillSettings, TokenNoise, distill_
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
    ("distill_token_noise", 1.0, "less than 1"),
    ("distill_token_noise", -0.1, "greater than or equal to 0"),
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


def _padded_batch() -> Batch:
    ids = torch.tensor([[101, 5, 6, 7, 8, 9, 10, 102], [101, 11, 12, 102, 0, 0, 0, 0]])
    return Batch(ids, (ids != 0).long())


def test_token_noise_replaces_interior_tokens_only_with_calibration_tokens():
    batch = _padded_batch()
    noise = TokenNoise([batch], 0.5, seed=1)
    assert sorted(noise.vocabulary.tolist()) == [5, 6, 7, 8, 9, 10, 11, 12]  # no [CLS], [SEP] or padding
    changed = torch.zeros_like(batch.input_ids, dtype=torch.bool)
    for _ in range(200):
        noised = noise(batch)
        assert torch.equal(noised.attention_mask, batch.attention_mask)
        assert noised.input_ids[:, 0].eq(101).all() and noised.input_ids[0, 7] == 102 and noised.input_ids[1, 3] == 102
        assert noised.input_ids[1, 4:].eq(0).all()
        assert set(noised.input_ids[noised.input_ids != batch.input_ids].tolist()) <= set(range(5, 13))
        changed |= noised.input_ids != batch.input_ids
    assert changed[0, 1:7].all() and changed[1, 1:3].all()  # every interior position gets replaced sometimes
    assert not changed[:, 0].any()
    assert torch.equal(batch.input_ids, _padded_batch().input_ids)  # the calibration batch itself is untouched


def test_token_noise_keeps_the_special_tokens_of_left_padded_texts():
    ids = torch.tensor([[0, 0, 101, 5, 6, 102], [101, 7, 8, 9, 10, 102]])
    noised = TokenNoise([Batch(ids, (ids != 0).long())], 0.9, seed=0)(Batch(ids, (ids != 0).long()))
    assert noised.input_ids[0, :3].tolist() == [0, 0, 101] and noised.input_ids[:, 5].eq(102).all()
    assert noised.input_ids[1, 0] == 101


def test_token_noise_fraction_and_seed():
    ids = torch.randint(1000, 2000, (64, 66), generator=torch.Generator().manual_seed(0))
    batch = Batch(ids, torch.ones(64, 66, dtype=torch.long))
    first, second = TokenNoise([batch], 0.15, seed=4), TokenNoise([batch], 0.15, seed=4)
    draws = [first(batch) for _ in range(5)]
    for drawn in draws:
        assert torch.equal(drawn.input_ids, second(batch).input_ids)
        replaced = float((drawn.input_ids != batch.input_ids).float()[:, 1:-1].mean())
        assert 0.125 < replaced < 0.175  # 15 % drawn (4096 tokens: sd 0.006); a few draw the token they replace
    assert not torch.equal(draws[0].input_ids, draws[1].input_ids)  # afresh at every step
    assert TokenNoise([batch], 0.0, seed=4)(batch) is batch
    with pytest.raises(ValueError, match=r"token_noise must be in \[0, 1\), got 1.5"):
        TokenNoise([batch], 1.5, seed=0)


def test_distillation_with_token_noise_still_lowers_the_error(batches):
    teacher = tiny_encoder()
    student = copy.deepcopy(teacher)
    apply_compact(student, CompactConfig(budget=0.5, min_ffn=8, reconstruct=False), TransformContext(batches=batches))
    reference = outputs(teacher, batches)
    cut_only = _error(student, reference, batches)
    distill_(student, teacher, batches, DistillSettings(steps=40, lr=1e-3, token_noise=0.2), progress=False)
    assert _error(student, reference, batches) < cut_only
