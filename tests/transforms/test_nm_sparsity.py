"""N:M sparsity: exact pattern, shapes and dtype kept, scopes, methods, errors (on a tiny random BERT)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertModel

from icd.measure.encode import Batch
from icd.model.encoder import Encoder
from icd.transforms.api import TransformContext, optimize_
from icd.transforms.configs import NMSparsityConfig
from icd.calibrate.gram import InputGram
from icd.calibrate.replay import LinearStats
from icd.transforms.nm_sparsity import (
    _sparsegpt,
    _sparsify,
    improve_mask,
    is_nm,
    magnitude_prune,
    nm_mask,
    select_linears,
    sparsegpt_prune,
    wanda_prune,
)
from icd.transforms.refit import refit_masked, row_errors

LAYERS = 2


@pytest.fixture(scope="module")
def tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    return Encoder(BertModel(config, add_pooling_layer=False).eval(), "embedding").eval()


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        ids = torch.randint(5, 200, (4, 12), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0  # some padding
        out.append(Batch(ids, mask))
    return out


def _context(batches: list[Batch]) -> TransformContext:
    return TransformContext(batches=batches)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("sequential", [True, False])
def test_every_selected_linear_gets_exact_nm_and_keeps_shape_dtype(tiny_encoder, batches, method, sequential):
    enc = copy.deepcopy(tiny_encoder)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    ctx = _context(batches)
    optimize_(enc, NMSparsityConfig(n=2, m=4, scope="all", method=method, sequential=sequential,
                                    bias_correction=False), ctx)
    linears = select_linears(enc, "all")
    assert len(linears) == 6 * LAYERS
    for name, linear in linears.items():
        w = linear.weight
        assert is_nm(w, 2, 4), name
        assert w.dtype == torch.float32
        assert w.shape == before[f"hf.{name}.weight"].shape
        # exactly half of each group survives (random weights have no zeros)
        assert (w != 0).float().mean().item() == pytest.approx(0.5)
        assert torch.equal(linear.bias, before[f"hf.{name}.bias"])  # biases untouched
    report = ctx.applied[-1].result
    assert [layer.name for layer in report.layers] == list(linears)
    assert all(layer.kept_fraction == pytest.approx(0.5) for layer in report.layers)
    assert all(layer.rel_error >= 0 for layer in report.layers)
    ids, mask = batches[0].input_ids, batches[0].attention_mask
    assert enc(ids, mask).shape == tiny_encoder(ids, mask).shape


def test_scope_ffn_leaves_attention_dense(tiny_encoder):
    enc = copy.deepcopy(tiny_encoder)
    optimize_(enc, NMSparsityConfig(scope="ffn", method="magnitude"))
    ffn = select_linears(enc, "ffn")
    assert sorted(ffn) == sorted(f"encoder.layer.{i}.{k}.dense" for i in range(LAYERS) for k in ("intermediate", "output"))
    for name, linear in select_linears(enc, "attention").items():
        original = dict(tiny_encoder.bert.named_modules())[name].weight
        assert torch.equal(linear.weight, original), name
    assert all(is_nm(lin.weight, 2, 4) for lin in ffn.values())


def test_scope_names():
    enc_names = {
        "attention": {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"},
    }
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = Encoder(BertModel(config, add_pooling_layer=False), "embedding")
    got = {name.split("layer.0.", 1)[1] for name in select_linears(model, "attention")}
    assert got == enc_names["attention"]
    assert list(select_linears(model, r"intermediate")) == ["encoder.layer.0.intermediate.dense"]
    with pytest.raises(ValueError, match="selects no Linear"):
        select_linears(model, r"no_such_linear")


def test_data_aware_method_without_data_raises(tiny_encoder):
    with pytest.raises(ValueError, match="calibration data"):
        optimize_(copy.deepcopy(tiny_encoder), NMSparsityConfig(method="wanda"))


def test_m_must_divide_in_features(tiny_encoder):
    with pytest.raises(ValueError, match="not a multiple of m"):
        optimize_(copy.deepcopy(tiny_encoder), NMSparsityConfig(n=2, m=5, method="magnitude", blocksize=125))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    groups=st.integers(1, 5),
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8)]),
    seed=st.integers(0, 10_000),
)
def test_nm_mask_keeps_top_n_of_each_group(rows, groups, nm, seed):
    n, m = nm
    scores = torch.randn(rows, groups * m, generator=torch.Generator().manual_seed(seed))
    mask = nm_mask(scores, n, m)
    assert mask.shape == scores.shape
    assert (mask.reshape(rows, groups, m).sum(-1) == n).all()
    kept_min = scores.masked_fill(~mask, float("inf")).reshape(rows, groups, m).amin(-1)
    dropped_max = scores.masked_fill(mask, float("-inf")).reshape(rows, groups, m).amax(-1)
    assert (kept_min >= dropped_max).all()
    assert is_nm(magnitude_prune(scores, n, m), n, m)


def test_nm_mask_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of m=4"):
        nm_mask(torch.randn(2, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < n < m"):
        nm_mask(torch.randn(2, 8), 4, 4)


def test_wanda_uses_input_norms():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    norms = torch.tensor([100.0, 100.0, 1.0, 1.0])  # big activations on the small weights
    assert torch.equal(wanda_prune(weight, norms, 2, 4), torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    assert torch.equal(magnitude_prune(weight, 2, 4), torch.tensor([[0.0, 0.0, 3.0, 4.0]]))


def test_sparsegpt_reconstruction_beats_magnitude_on_correlated_inputs():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 16, generator=gen)
    x = torch.randn(2000, 16, generator=gen) @ mix  # correlated input channels
    weight = torch.randn(8, 16, generator=gen)
    hessian = (x.T @ x / x.shape[0]).double()

    def output_error(w_new: torch.Tensor) -> float:
        return ((x @ (weight - w_new).T) ** 2).sum().item()

    sparse = sparsegpt_prune(weight, hessian, 2, 4, blocksize=8, damp=0.001)
    assert sparse.dtype == weight.dtype and sparse.shape == weight.shape
    assert is_nm(sparse, 2, 4)
    assert output_error(sparse) < 0.8 * output_error(magnitude_prune(weight, 2, 4))


def test_sparsegpt_sequential_error_feedback_toggle(tiny_encoder, batches):
    outs = {}
    for feedback in (True, False):
        enc = copy.deepcopy(tiny_encoder)
        ctx = _context(batches)
        optimize_(enc, NMSparsityConfig(scope="all", method="sparsegpt", error_feedback=feedback), ctx)
        assert all(is_nm(lin.weight, 2, 4) for lin in select_linears(enc, "all").values())
        kinds = {layer.error_kind for layer in ctx.applied[-1].result.layers}
        assert kinds == ({"output_vs_dense"} if feedback else {"output"})
        assert all(0.0 <= layer.rel_error < 1.0 for layer in ctx.applied[-1].result.layers)
        outs[feedback] = enc(batches[0].input_ids, batches[0].attention_mask)
    assert not torch.equal(outs[True], outs[False])


def test_applies_after_a_folded_permutation(tiny_encoder):
    """N:M acts on the weights as they are: permuting input columns first changes which weights survive."""
    enc = copy.deepcopy(tiny_encoder)
    linear = select_linears(enc, "ffn")["encoder.layer.0.output.dense"]
    perm = torch.randperm(linear.in_features, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        linear.weight.copy_(linear.weight[:, perm])
    optimize_(enc, NMSparsityConfig(scope=r"layer\.0\.output\.dense$", method="magnitude"))
    assert is_nm(linear.weight, 2, 4)
    original = dict(tiny_encoder.bert.named_modules())["encoder.layer.0.output.dense"].weight
    assert torch.equal(linear.weight, magnitude_prune(original[:, perm], 2, 4))


# ----------------------------------------------------------------------------------------------------------------
# Exact least-squares re-fit, mask swaps, bias and residual feedback


def _problem(seed: int, rows: int = 6, cols: int = 16, tokens: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=gen, dtype=torch.float64) @ torch.randn(cols, cols, generator=gen,
                                                                                   dtype=torch.float64)
    weight = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    return x, weight, x.T @ x / tokens


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), damp=st.sampled_from([0.0, 0.001, 0.01, 0.1]))
def test_refit_never_increases_calibration_error_vs_sparsegpt(seed, damp):
    _x, weight, hessian = _problem(seed)
    sparse, keep = _sparsegpt(weight, hessian, 2, 4, blocksize=8, damp=damp)
    refit = refit_masked(weight, hessian, keep, damp)
    assert torch.equal(refit != 0, keep)  # same support, exactly 2:4
    assert is_nm(refit, 2, 4)
    before, after = row_errors(sparse, weight, hessian, damp), row_errors(refit, weight, hessian, damp)
    assert (after <= before * (1 + 1e-9) + 1e-12).all()
    improved, improved_keep = improve_mask(weight, hessian, keep, 2, 4, rounds=3, damp=damp)
    assert is_nm(improved, 2, 4) and (improved_keep.reshape(6, -1, 4).sum(-1) == 2).all()
    assert (row_errors(improved, weight, hessian, damp) <= after * (1 + 1e-9) + 1e-12).all()


def test_refit_matches_brute_force_least_squares():
    x, weight, hessian = _problem(7, rows=3, cols=8, tokens=50)
    damp = 0.01
    keep = nm_mask(torch.randn(3, 8, generator=torch.Generator().manual_seed(2)), 2, 4)
    refit = refit_masked(weight, hessian, keep, damp)
    lam = damp * hessian.diagonal().mean()
    for r in range(3):
        support = keep[r].nonzero().flatten()
        # min ‖X(w − t)‖²/N + λ‖w − t‖² over w supported on S, as an ordinary least-squares problem
        a = torch.cat([x / len(x) ** 0.5, lam.sqrt() * torch.eye(8, dtype=x.dtype)])
        y = a @ weight[r]
        best = torch.linalg.lstsq(a[:, support], y).solution
        assert torch.allclose(refit[r, support], best, atol=1e-9)
        assert (refit[r, ~keep[r]] == 0).all()


def test_improve_mask_finds_better_masks_than_sparsegpt_on_a_tiny_exhaustive_problem():
    """On 1 row × 8 inputs (36 masks) the swapped mask is never worse than SparseGPT's and never better than the
    exhaustive optimum."""
    import itertools

    for seed in range(5):
        _x, weight, hessian = _problem(seed, rows=1, cols=8, tokens=60)
        _, keep = _sparsegpt(weight, hessian, 2, 4, blocksize=8, damp=0.01)
        err_refit = row_errors(refit_masked(weight, hessian, keep, 0.01), weight, hessian, 0.01).item()
        improved, _ = improve_mask(weight, hessian, keep, 2, 4, rounds=5, damp=0.01)
        err_improved = row_errors(improved, weight, hessian, 0.01).item()
        best = float("inf")
        for first, second in itertools.product(itertools.combinations(range(4), 2), repeat=2):
            mask = torch.zeros(1, 8, dtype=torch.bool)
            mask[0, list(first)] = True
            mask[0, [4 + j for j in second]] = True
            best = min(best, row_errors(refit_masked(weight, hessian, mask, 0.01), weight, hessian, 0.01).item())
        assert best - 1e-12 <= err_improved <= err_refit + 1e-12


@pytest.mark.parametrize(
    "options",
    [
        {"refit": False, "mask_rounds": 0, "bias_correction": False, "residual_feedback": False,
         "layernorm_correction": False},
        {"refit": True, "bias_correction": False, "residual_feedback": False, "layernorm_correction": False},
        {"refit": True, "bias_correction": True, "residual_feedback": True},
        {"refit": False, "bias_correction": True, "residual_feedback": True},
        {"mask_rounds": 2, "bias_correction": True},
        {"error_feedback": False, "bias_correction": True},
    ],
)
def test_sparsegpt_options_keep_exact_nm_shape_dtype(tiny_encoder, batches, options):
    enc = copy.deepcopy(tiny_encoder)
    ctx = _context(batches)
    optimize_(enc, NMSparsityConfig(scope="all", method="sparsegpt", **options), ctx)
    before = dict(tiny_encoder.bert.named_modules())
    for name, linear in select_linears(enc, "all").items():
        assert is_nm(linear.weight, 2, 4), name
        assert linear.weight.dtype == torch.float32 and linear.bias.dtype == torch.float32
        assert linear.weight.shape == before[name].weight.shape and linear.bias.shape == before[name].bias.shape
        assert torch.isfinite(linear.weight).all() and torch.isfinite(linear.bias).all()
        changed_bias = not torch.equal(linear.bias, before[name].bias)
        assert changed_bias == bool(options.get("bias_correction", True)), name
    assert all(layer.rel_error >= 0 for layer in ctx.applied[-1].result.layers)
    norms_fitted = options.get("layernorm_correction", True) and options.get("error_feedback", True)
    for index in range(LAYERS):
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            name = f"encoder.layer.{index}.{norm}"
            new_norm, old_norm = enc.bert.get_submodule(name), tiny_encoder.bert.get_submodule(name)
            assert new_norm.weight.shape == old_norm.weight.shape and torch.isfinite(new_norm.weight).all()
            assert torch.equal(new_norm.weight, old_norm.weight) != norms_fitted, name
    out = enc(batches[0].input_ids, batches[0].attention_mask)
    assert out.shape == tiny_encoder(batches[0].input_ids, batches[0].attention_mask).shape
    assert torch.isfinite(out).all()


def test_bias_refit_matches_mean_outputs():
    """With the bias as a never-pruned input column of 1s (damping off), the least-squares fit leaves no mean
    output error on the calibration tokens."""
    x, weight, _ = _problem(3, rows=4, cols=8, tokens=300)
    x = x + 2.0  # inputs with a non-zero mean
    bias = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    stats = LinearStats(InputGram(x.T @ x, x.shape[0]), sum_hat=x.sum(0))
    config = NMSparsityConfig(scope="all", method="sparsegpt", damp=0.0, bias_correction=True, blocksize=8)
    new_w, new_b = _sparsify(weight, bias, config, stats)
    assert new_b is not None and is_nm(new_w, 2, 4)
    residual = (x @ weight.T + bias) - (x @ new_w.T + new_b)
    assert residual.mean(0).abs().max() < 1e-8
    plain_w, _ = _sparsify(weight, bias, config.model_copy(update={"bias_correction": False}), stats)
    plain = (x @ weight.T + bias) - (x @ plain_w.T + bias)
    assert (residual**2).sum() <= (plain**2).sum()
