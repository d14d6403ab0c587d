"""Every supported family: its layout names real modules, and folding permutations keeps the function exactly.

Property-based (hypothesis): random permutations of random subsets of the permutable dims of small random models
of each family (BERT, RoBERTa, DistilBERT, MPNet; embedding and classifier), on real-shaped inputs (padding, the
family's pad id), against the unpermuted model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icd.model.families import FAMILIES, ROLES, UnsupportedFamilyError, base_model_of, family_for, family_of
from icd.model.layout import (
    DimKind,
    dim_users,
    head_channels,
    input_readers,
    model_shape,
    output_writers,
    permutable_dims,
)
from icd.transforms.permute import apply_permutations_
from tests.model.tiny import FAMILY_TYPES, tiny_encoder

TASKS = ("embedding", "sequence_classification")
RTOL = 2e-5
DIM_KINDS = ("hidden", "ffn", "heads", "qk", "vo")
VOCAB = 1000  # small: building 8 models stays cheap


@pytest.fixture(scope="module")
def encoders():
    """One tiny model per (family, task), built once (tests deep-copy before changing one)."""
    return {(mt, task): tiny_encoder(task, seed=3, model_type=mt, vocab=VOCAB) for mt in FAMILY_TYPES for task in TASKS}


def real_shaped_inputs(encoder, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """4 x 19 token ids with right padding (the family's pad id) on two rows, special tokens at the ends."""
    gen = torch.Generator().manual_seed(seed)
    config = base_model_of(encoder).config
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    ids = torch.randint(5, VOCAB, (4, 19), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[3, 5:] = 0
    ids[:, 0] = 0 if pad == 1 else 101
    ids[mask == 0] = pad
    return ids, mask


def random_perm(dim, rng: np.random.Generator) -> np.ndarray:
    if dim.block:
        return np.concatenate([start + rng.permutation(dim.block) for start in range(0, dim.size, dim.block)])
    return rng.permutation(dim.size)


@torch.no_grad()
def outputs(encoder, inputs) -> torch.Tensor:
    return encoder(*inputs)


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
@pytest.mark.parametrize("task", TASKS)
def test_layout_names_real_modules(encoders, model_type, task):
    encoder = encoders[(model_type, task)]
    family, base, shape = family_of(encoder), base_model_of(encoder), model_shape(encoder)
    assert family.model_type == model_type and encoder.base is base and encoder.family is family
    assert shape.layers == 2 and shape.hidden == 64 and shape.intermediate == 128 and shape.heads == 4
    for layer in range(shape.layers):
        assert set(family.linears(layer)) == set(ROLES)
        for name in family.linears(layer).values():
            assert isinstance(base.get_submodule(name), torch.nn.Linear), name
    for name in family.residual_norms(shape.layers):
        assert isinstance(base.get_submodule(name), torch.nn.LayerNorm), name
    for name in family.embedding_tables:
        assert base.get_submodule(name).weight.shape[1] == shape.hidden, name
    if task == "sequence_classification":
        for name in family.head_hidden_readers:
            assert encoder.hf.get_submodule(name).in_features == shape.hidden, name


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_dim_users_index_the_right_weight_axis(encoders, model_type):
    encoder = encoders[(model_type, "sequence_classification")]
    base = base_model_of(encoder)
    dims = permutable_dims(encoder)
    assert {d.kind for d in dims} == set(family_for(model_type).permutable)
    for dim in dims:
        uses = dim_users(encoder, dim.name)
        assert uses or dim.kind == DimKind.HIDDEN
        for use in uses:
            weight = base.get_submodule(use.name).weight
            expected = dim.size * (encoder.base.config.hidden_size // dim.size if dim.kind == DimKind.HEADS else 1)
            assert weight.shape[use.axis] == expected, (dim.name, use)
        assert input_readers(encoder, dim.name) == [u.name for u in uses if u.axis == 1]
        assert output_writers(encoder, dim.name) == [u.name for u in uses if u.axis == 0]
    assert head_channels(encoder, 1) == slice(16, 32)
    with pytest.raises(ValueError, match="out of range"):
        head_channels(encoder, 4)


def test_distilbert_and_mpnet_layouts_use_their_own_names(encoders):
    distil = encoders[("distilbert", "embedding")]
    assert output_writers(distil, "layer1.ffn") == ["transformer.layer.1.ffn.lin1"]
    assert input_readers(distil, "layer0.vo") == ["transformer.layer.0.attention.out_lin"]
    mpnet = encoders[("mpnet", "embedding")]
    assert output_writers(mpnet, "layer0.qk") == ["encoder.layer.0.attention.attn.q", "encoder.layer.0.attention.attn.k"]
    assert not [d for d in permutable_dims(mpnet) if d.kind == DimKind.HEADS]


def test_unsupported_model_type_names_the_supported_ones():
    with pytest.raises(UnsupportedFamilyError, match="'gpt2' is not supported; supported: bert, distilbert, mpnet, roberta"):
        family_for("gpt2")
    assert sorted(FAMILIES) == sorted(FAMILY_TYPES)


def test_mpnet_refuses_a_head_permutation(encoders):
    """One relative-attention bias table serves every layer: a per-layer head order cannot be folded."""
    encoder = copy.deepcopy(encoders[("mpnet", "embedding")])
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer0\.heads.*mpnet models admit no heads dims"):
        apply_permutations_(encoder, {"hidden": np.arange(64)[::-1].copy(), "layer0.heads": np.array([1, 0, 2, 3])})
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # nothing half-done


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_type=st.sampled_from(FAMILY_TYPES), task=st.sampled_from(TASKS),
       kinds=st.sets(st.sampled_from(DIM_KINDS), min_size=1), seed=st.integers(0, 2**31 - 1))
def test_folded_permutations_preserve_the_function(encoders, model_type, task, kinds, seed):
    original = encoders[(model_type, task)]
    rng = np.random.default_rng(seed)
    perms = {d.name: random_perm(d, rng) for d in permutable_dims(original) if d.kind.value in kinds}
    if not perms:  # MPNet asked only for heads: nothing to permute
        assert model_type == "mpnet" and kinds == {"heads"}
        return
    permuted = copy.deepcopy(original)
    apply_permutations_(permuted, perms)
    changed = [k for k, v in permuted.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert changed, "the permutations moved no weight"
    inputs = real_shaped_inputs(original, seed % 1000)
    expected, actual = outputs(original, inputs), outputs(permuted, inputs)
    assert float((actual - expected).abs().max()) <= RTOL * float(expected.abs().max())


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_hidden_permutation_reaches_the_classification_head(encoders, model_type):
    """Heads that read the residual stream (RoBERTa, DistilBERT, MPNet) take the hidden permutation; BERT's reads
    the pooler and is untouched; logits are unchanged in every family."""
    original = encoders[(model_type, "sequence_classification")]
    permuted = copy.deepcopy(original)
    perm = np.random.default_rng(0).permutation(64)
    apply_permutations_(permuted, {"hidden": perm})
    family = family_for(model_type)
    for name in family.head_hidden_readers:
        torch.testing.assert_close(permuted.hf.get_submodule(name).weight,
                                   original.hf.get_submodule(name).weight[:, torch.as_tensor(perm)])
    inputs = real_shaped_inputs(original)
    torch.testing.assert_close(outputs(permuted, inputs), outputs(original, inputs), rtol=0, atol=2e-5)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "mpnet"])
def test_every_family_traces_to_the_served_torchscript(encoders, model_type):
    """What ``icd export-triton`` serves: the TorchScript trace, checked at other shapes against the eager model
    (BERT's is covered by the export tests)."""
    from icd.export.torchscript import trace_encoder

    encoder = encoders[(model_type, "sequence_classification")]
    traced = trace_encoder(encoder)  # raises ArtefactError when the trace differs from the eager model
    inputs = real_shaped_inputs(encoder, 5)
    torch.testing.assert_close(traced(*inputs), outputs(encoder, inputs), rtol=0, atol=1e-5)
