"""Structured compaction on a tiny random BERT: exactness, slicing = masking, the least-squares re-fit against a
brute-force solve, allocation to a budget, save / reload, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.calibrate.gram import InputGram
from icd.calibrate.replay import LinearStats
from icd.config.schema import ModelSection
from icd.measure.encode import Batch
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.compact import config_for_step, step_targets
from icd.transforms.compact_allocate import by_budget, by_ratio
from icd.transforms.compact_cost import UnitCosts, flops_costs
from icd.transforms.compact_importance import CRITERIA, UnitScores
from icd.transforms.compact_slice import LayerSize, keep_ffn_, keep_heads_, layer_sizes
from icd.transforms.configs import CompactConfig
from icd.transforms.refit import fit_to_dense
from tests.model.tiny import TINY, outputs, random_batches, tiny_encoder

HEAD_DIM = TINY["hidden_size"] // TINY["num_attention_heads"]


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    return random_batches(seed=1)


def _compacted(encoder, batches, **config):
    model = copy.deepcopy(encoder)
    ctx = TransformContext(batches=batches)
    optimize_(model, CompactConfig(**config), ctx)
    return model, ctx.applied[-1].result


@pytest.mark.parametrize("importance", CRITERIA)
def test_keep_everything_is_exact(encoder, batches, importance):
    model, report = _compacted(encoder, batches, heads_keep=1.0, ffn_keep=1.0, importance=importance)
    assert torch.equal(outputs(model, batches), outputs(encoder, batches))
    assert report.kept_cost == 1.0
    assert all(layer.ffn_after == layer.ffn_before for layer in report.layers)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_permute_to_front_and_slice_equals_masking(encoder, batches, data):
    """Cutting heads / FFN channels gives the outputs of the full model with those units' outputs zeroed."""
    sliced, masked = copy.deepcopy(encoder), copy.deepcopy(encoder)
    heads, ffn = TINY["num_attention_heads"], TINY["intermediate_size"]
    for layer in range(TINY["num_hidden_layers"]):
        keep_h = data.draw(st.lists(st.integers(0, heads - 1), min_size=1, max_size=heads, unique=True))
        keep_f = data.draw(st.lists(st.integers(0, ffn - 1), min_size=1, max_size=ffn, unique=True))
        keep_heads_(sliced, layer, keep_h)
        keep_ffn_(sliced, layer, keep_f)
        block = masked.bert.encoder.layer[layer]
        with torch.no_grad():
            for head in set(range(heads)) - set(keep_h):
                block.attention.output.dense.weight[:, head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
            drop = sorted(set(range(ffn)) - set(keep_f))
            block.output.dense.weight[:, drop] = 0
        assert layer_sizes(sliced)[layer] == LayerSize(len(keep_h), len(keep_f))
    torch.testing.assert_close(outputs(sliced, batches), outputs(masked, batches), rtol=1e-5, atol=1e-5)


def _stats(x_hat: np.ndarray, x: np.ndarray, r_gap: np.ndarray | None) -> LinearStats:
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return LinearStats(
        gram=InputGram(t(x_hat.T @ x_hat), x_hat.shape[0]), cross=t(x_hat.T @ x), dense_gram=t(x.T @ x),
        sum_hat=t(x_hat.sum(0)), sum_dense=t(x.sum(0)),
        cross_resid=None if r_gap is None else t(x_hat.T @ r_gap), sum_resid=None if r_gap is None else t(r_gap.sum(0)),
    )


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(12, 40), k=st.integers(2, 6), cut=st.integers(1, 5), out=st.integers(1, 4),
       residual=st.booleans(), seed=st.integers(0, 10_000))
def test_refit_matches_brute_force_lstsq(tokens, k, cut, out, residual, seed):
    """fit_to_dense (damping 0) is the least-squares fit of the dense outputs (+ residual error) from [X̂, 1]."""
    rng = np.random.default_rng(seed)
    k_hat = max(1, k - cut)
    x = rng.normal(size=(tokens, k))
    x_hat = x[:, :k_hat] + 0.1 * rng.normal(size=(tokens, k_hat))  # the compacted model's (perturbed) inputs
    w, b = rng.normal(size=(out, k)), rng.normal(size=out)
    r_gap = rng.normal(size=(tokens, out)) if residual else None
    new_w, new_b = fit_to_dense(torch.as_tensor(w), torch.as_tensor(b), _stats(x_hat, x, r_gap), damp=0.0)
    target = x @ w.T + b + (r_gap if residual else 0.0)
    design = np.hstack([x_hat, np.ones((tokens, 1))])
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    np.testing.assert_allclose(new_w.numpy(), solution[:-1].T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(new_b.numpy(), solution[-1], rtol=1e-6, atol=1e-8)
    no_bias, none = fit_to_dense(torch.as_tensor(w), None, _stats(x_hat, x, r_gap), damp=0.0)
    assert none is None  # without a bias: the weights alone fit the dense weights' outputs (+ residual error)
    plain = np.linalg.lstsq(x_hat, x @ w.T + (r_gap if residual else 0.0), rcond=None)[0]
    np.testing.assert_allclose(no_bias.numpy(), plain.T, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("with_bias", [True, False])
def test_refit_with_unchanged_inputs_keeps_the_dense_weights(with_bias):
    """The damping pulls towards the prior (the dense weights), so nothing changes where nothing was cut."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)) @ np.diag([1.0, 1.0, 1e-3, 1.0, 1.0])  # one nearly dead input direction
    w, b = torch.as_tensor(rng.normal(size=(3, 5))), torch.as_tensor(rng.normal(size=3))
    new_w, new_b = fit_to_dense(w, b if with_bias else None, _stats(x, x, None), damp=0.05, prior=w)
    torch.testing.assert_close(new_w, w, rtol=1e-9, atol=1e-9)
    if with_bias:
        torch.testing.assert_close(new_b, b, rtol=1e-9, atol=1e-9)
    shrunk, _ = fit_to_dense(w, None, _stats(x, x, None), damp=0.05)  # towards zero: the dead direction shrinks
    assert float((shrunk - w).abs().max()) > 1e-3


def test_reconstruction_lowers_the_output_error(encoder, batches):
    refit, report = _compacted(encoder, batches, heads_keep=0.5, ffn_keep=0.5)
    plain, _ = _compacted(encoder, batches, heads_keep=0.5, ffn_keep=0.5, reconstruct=False)
    reference = outputs(encoder, batches)
    err = lambda m: float((outputs(m, batches) - reference).pow(2).sum())  # noqa: E731
    assert err(refit) < err(plain)
    assert layer_sizes(refit) == layer_sizes(plain) == [LayerSize(2, 64)] * 2
    assert all(layer.ffn_out_error is not None and layer.ffn_out_error >= 0 for layer in report.layers)


def test_budget_allocation_reaches_the_budget(encoder, batches):
    for budget, units in ((0.6, "both"), (0.7, "ffn"), (0.5, "heads")):
        model, report = _compacted(encoder, batches, budget=budget, units=units, min_ffn=8)
        assert report.kept_cost <= budget + 1e-9
        costs = flops_costs(encoder, 128)
        assert report.cost_after == pytest.approx(costs.model(layer_sizes(model)))
        sizes = layer_sizes(model)
        if units == "ffn":
            assert all(s.heads == TINY["num_attention_heads"] for s in sizes)
        if units == "heads":
            assert all(s.intermediate == TINY["intermediate_size"] for s in sizes)


def test_allocation_keeps_the_highest_scores():
    sizes = [LayerSize(4, 8), LayerSize(4, 8)]
    scores = UnitScores(heads=[torch.tensor([4.0, 1, 3, 2]), torch.tensor([1.0, 2, 3, 4])],
                        ffn=[torch.arange(8.0), torch.arange(8.0).flip(0)], criterion="test")
    ratio = by_ratio(scores, sizes, heads_keep=0.5, ffn_keep=0.25)
    assert ratio.heads == [[0, 2], [2, 3]] and ratio.ffn == [[6, 7], [0, 1]]
    unit = UnitCosts(fixed=0.0, head=1.0, channel=1.0, unit="flops", how="test")
    budget = by_budget(scores, sizes, unit, budget=0.5, ffn_multiple=2)
    assert unit.model(budget.sizes) <= 0.5 * unit.model(sizes)
    assert all(len(f) % 2 == 0 for f in budget.ffn)
    # the lowest-scored units went first: layer 1's low-index FFN channels are its best ones
    assert 0 in budget.ffn[1] and 0 not in budget.ffn[0]


def test_step_targets_end_where_one_shot_ends(encoder, batches):
    config = CompactConfig(ffn_keep=0.5, heads_keep=0.5)
    targets = step_targets(encoder, config, steps=2)
    model = copy.deepcopy(encoder)
    for step in (1, 2):
        optimize_(model, config_for_step(model, config, targets, step), TransformContext(batches=batches))
    one_shot, _ = _compacted(encoder, batches, ffn_keep=0.5, heads_keep=0.5)
    assert layer_sizes(model) == layer_sizes(one_shot)
    budget = CompactConfig(budget=0.5)
    targets = step_targets(encoder, budget, steps=3)
    assert targets.costs is not None and targets.costs[-1] == pytest.approx(0.5 * targets.unit_costs.model(
        layer_sizes(encoder)))


def test_compacted_model_saves_and_reloads(tmp_path, encoder, batches, minilm_tokenizer):
    from icd.pipeline.model_store import load_run_encoder, read_icd_model, save_run_encoder

    model, _ = _compacted(encoder, batches, heads_keep=0.5, ffn_keep=0.3)
    keep_ffn_(model, 1, range(17))  # layers of different sizes
    folder = save_run_encoder(tmp_path, model, minilm_tokenizer, ModelSection(), [])
    assert read_icd_model(folder)["layer_sizes"] == [{"heads": 2, "intermediate": 38},
                                                     {"heads": 2, "intermediate": 17}]
    reloaded = load_run_encoder(folder)
    assert layer_sizes(reloaded) == layer_sizes(model)
    torch.testing.assert_close(outputs(reloaded, batches), outputs(model, batches), rtol=1e-5, atol=1e-6)


def test_uncompacted_model_records_no_sizes(tmp_path, encoder, minilm_tokenizer):
    from icd.pipeline.model_store import read_icd_model, save_run_encoder

    folder = save_run_encoder(tmp_path, copy.deepcopy(encoder), minilm_tokenizer, ModelSection(), [])
    assert read_icd_model(folder)["layer_sizes"] is None


@pytest.mark.parametrize("config, message", [
    ({"ffn_keep": 1.5}, "less than or equal to 1"),
    ({"ffn_keep": 0.0}, "greater than 0"),
    ({"heads_keep": -0.1}, "greater than 0"),
    ({"budget": 0.0}, "greater than 0"),
    ({}, "give heads_keep and/or ffn_keep"),
    ({"budget": 0.5, "ffn_keep": 0.5}, "either budget or"),
])
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        CompactConfig(**config)


def test_unreachable_budget_is_refused_and_changes_nothing(encoder, batches):
    model = copy.deepcopy(encoder)
    with pytest.raises(ValueError, match=r"compact\.budget=0\.01: no allocation reaches it"):
        optimize_(model, CompactConfig(budget=0.01), TransformContext(batches=batches))
    assert torch.equal(outputs(model, batches), outputs(encoder, batches))


def _tiny(model_type: str):
    import transformers

    from icd.model.encoder import Encoder
    from icd.model.families import family_for

    family = family_for(model_type)
    shapes = {"bert": {}, "mpnet": {}, "distilbert": {"dim": 64, "hidden_dim": 128, "n_heads": 4, "n_layers": 2}}
    common = {"vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128}
    config = transformers.AutoConfig.for_model(model_type, **(shapes[model_type] or common))
    torch.manual_seed(0)
    return Encoder(getattr(transformers, family.base_class)(config, **family.base_kwargs).eval(), "embedding").eval()


@pytest.mark.parametrize("model_type", ["mpnet", "distilbert"])
def test_other_families_slice_as_they_mask(model_type, batches):
    """FFN channels (and, where the family allows, heads) cut through the family layout equal masking them."""
    model = _tiny(model_type)
    sliced, masked = copy.deepcopy(model), copy.deepcopy(model)
    keep_ffn_(sliced, 1, [3, 5, 40, 77])
    from icd.model.families import family_of

    reader = masked.base.get_submodule(f"{family_of(masked).layers}.1.{family_of(masked).roles['ffn_out']}")
    with torch.no_grad():
        reader.weight[:, sorted(set(range(128)) - {3, 5, 40, 77})] = 0
    if model_type == "distilbert":
        keep_heads_(sliced, 0, [1, 3])
        attn_out = masked.base.get_submodule(f"{family_of(masked).layers}.0.{family_of(masked).roles['attn_out']}")
        with torch.no_grad():
            attn_out.weight[:, 0:16] = 0
            attn_out.weight[:, 32:48] = 0
    torch.testing.assert_close(outputs(sliced, batches), outputs(masked, batches), rtol=1e-5, atol=1e-5)


def test_a_family_sharing_a_head_table_cuts_ffn_only(batches):
    model = _tiny("mpnet")
    with pytest.raises(ValueError, match="heads cannot be cut per layer"):
        optimize_(copy.deepcopy(model), CompactConfig(budget=0.7), TransformContext(batches=batches))
    compacted = copy.deepcopy(model)
    optimize_(compacted, CompactConfig(budget=0.85, units="ffn"), TransformContext(batches=batches))
    assert [s.heads for s in layer_sizes(compacted)] == [4, 4]
    assert all(s.intermediate < 128 for s in layer_sizes(compacted))


def test_calibration_data_is_required(encoder):
    with pytest.raises(ValueError, match="needs calibration data"):
        optimize_(copy.deepcopy(encoder), CompactConfig(ffn_keep=0.5))
