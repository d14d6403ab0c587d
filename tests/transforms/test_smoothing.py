"""Smoothing scalings: exact powers of two, function-preserving on real MiniLM held-out text."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from icd.transforms.smoothing import (
    MAX_EXPONENT,
    MIN_EXPONENT,
    InputScaled,
    fold_value_output_scale_,
    scale_of,
    smooth_linear_input_,
    smoothing_exponents,
)


@settings(max_examples=40, deadline=None)
@given(
    in_features=st.integers(1, 24),
    out_features=st.integers(1, 8),
    alpha=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
    spread=st.floats(0.0, 12.0),
)
def test_exponents_are_bounded_int8_and_move_range_the_right_way(in_features, out_features, alpha, seed, spread):
    gen = torch.Generator().manual_seed(seed)
    absmax = torch.pow(2.0, torch.rand(in_features, generator=gen) * spread)
    weight = torch.randn(out_features, in_features, generator=gen)
    k = smoothing_exponents(absmax, weight, alpha)
    assert k.dtype == torch.int8 and k.shape == (in_features,)
    assert int(k.min()) >= MIN_EXPONENT and int(k.max()) <= MAX_EXPONENT
    if alpha > 0 and in_features > 1:
        # a larger activation range never gets a smaller scale when weights are equal
        equal_w = torch.ones(out_features, in_features)
        k_eq = smoothing_exponents(absmax, equal_w, alpha)
        order = torch.argsort(absmax)
        assert bool((k_eq[order][1:] >= k_eq[order][:-1]).all())


def test_exponents_validate_inputs():
    with pytest.raises(ValueError, match="alpha"):
        smoothing_exponents(torch.ones(4), torch.ones(2, 4), 1.5)
    with pytest.raises(ValueError, match="in_features"):
        smoothing_exponents(torch.ones(3), torch.ones(2, 4), 0.5)


def test_powers_of_two_make_a_single_linear_exact():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    x = torch.randn(5, 16) * torch.logspace(-2, 2, 16)
    expected = linear(x)
    root = nn.Sequential(linear)
    smooth_linear_input_(root, "0", torch.arange(-8, 8, dtype=torch.int8))
    assert isinstance(root[0], InputScaled)
    torch.testing.assert_close(root(x), expected, rtol=1e-6, atol=1e-6)


def test_smoothing_rejects_wrong_targets():
    root = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match="not an nn.Linear"):
        smooth_linear_input_(root, "1", torch.zeros(4, dtype=torch.int8))
    with pytest.raises(ValueError, match="exponents"):
        smooth_linear_input_(root, "0", torch.zeros(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="differ"):
        fold_value_output_scale_(nn.Linear(4, 4), nn.Linear(6, 4), torch.zeros(4, dtype=torch.int8))


def _batch(tokenizer, texts):
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _fold_every_layer_(model, gen: torch.Generator, bound: int) -> None:
    """Fold random V->O exponents in [-bound, bound] into every layer of ``model``."""
    for layer in model.bert.encoder.layer:
        attn = layer.attention
        k = torch.randint(-bound, bound + 1, (attn.output.dense.in_features,), generator=gen, dtype=torch.int8)
        fold_value_output_scale_(attn.self.value, attn.output.dense, k)


def test_value_output_fold_is_exact_on_minilm(minilm_encoder, minilm_tokenizer, corpus_split):
    """Powers of two scale V's rows and O's columns exactly: the folded model computes the same embeddings to
    rounding noise (the int8 search takes its fp32 reference from before the fold, icd/transforms/int8.py)."""
    ids, mask = _batch(minilm_tokenizer, corpus_split.heldout[:16])
    with torch.inference_mode():
        expected = minilm_encoder(ids, mask)
    model = copy.deepcopy(minilm_encoder)
    _fold_every_layer_(model, torch.Generator().manual_seed(2), 6)
    with torch.inference_mode():
        got = model(ids, mask)
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.value.weight,
                           minilm_encoder.bert.encoder.layer[0].attention.self.value.weight)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_smoothing_alone_preserves_minilm_on_heldout_text(minilm_encoder, minilm_tokenizer, corpus_split):
    """Every Linear smoothed (random exponents in [-4, 4]) and every V->O folded: same embeddings (1e-5 rel)."""
    ids, mask = _batch(minilm_tokenizer, corpus_split.heldout[:16])
    with torch.inference_mode():
        expected = minilm_encoder(ids, mask)
    model = copy.deepcopy(minilm_encoder)
    gen = torch.Generator().manual_seed(1)
    _fold_every_layer_(model, gen, 4)
    for name in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense"]:
        for i in range(len(model.bert.encoder.layer)):
            full = f"encoder.layer.{i}.{name}"
            width = model.bert.get_submodule(full).in_features
            smooth_linear_input_(model.bert, full, torch.randint(-4, 5, (width,), generator=gen, dtype=torch.int8))
    with torch.inference_mode():
        got = model(ids, mask)
    rel = ((got - expected).norm(dim=1) / expected.norm(dim=1)).max().item()
    assert rel < 1e-5, rel
    assert sum(isinstance(m, InputScaled) for m in model.modules()) == 36


def test_scale_of_is_exact_power_of_two():
    k = torch.tensor([-3, 0, 5], dtype=torch.int8)
    assert scale_of(k).tolist() == [0.125, 1.0, 32.0]
