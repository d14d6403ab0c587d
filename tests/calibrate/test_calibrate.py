"""Streaming calibration statistics: counts, Gram matrices against direct computation, NPZ round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icd.calibrate import CalibrationStats, ChannelStats, calibrate
from icd.errors import ArtefactError
from icd.model.layout import input_readers, layer_linears, output_writers, permutable_dims
from tests.model.tiny import tiny_encoder

TEXTS = [
    "Return the absolute value of the argument.",
    "A short one.",
    "Create a new dictionary with keys from iterable and values set to value, which defaults to None.",
    "Open file and return a stream. Raise OSError upon failure.",
    "x",
]


@pytest.fixture(scope="module")
def classifier():
    return tiny_encoder("sequence_classification")


@pytest.fixture(scope="module")
def stats(classifier, minilm_tokenizer):
    return calibrate(classifier, minilm_tokenizer, TEXTS, batch_size=2, max_length=16, progress=False)


def _tokens(tokenizer, max_length=16) -> int:
    return int(tokenizer(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")[
        "attention_mask"].sum())


def test_counts_are_non_padding_tokens(stats, classifier, minilm_tokenizer):
    tokens = _tokens(minilm_tokenizer)
    assert stats.meta["tokens"] == tokens and stats.meta["texts"] == len(TEXTS)
    layers = classifier.bert.config.num_hidden_layers
    for name, channel in stats.inputs.items():
        expected = len(TEXTS) if name in ("pooler.dense", "classifier") else tokens
        assert channel.count == expected, name
    assert set(stats.inputs) == {n for n, m in classifier.bert.named_modules() if isinstance(m, torch.nn.Linear)} | {
        "classifier"}
    assert len(stats.outputs) == 2 * layers
    assert stats.hidden.count == tokens * (2 * layers + 1)


def test_grams_are_symmetric_psd_and_consistent(stats):
    for channel in [stats.hidden, *stats.inputs.values(), *stats.outputs.values()]:
        gram = channel.gram
        assert np.array_equal(gram, gram.T)
        assert np.linalg.eigvalsh(gram).min() >= -1e-9 * np.abs(gram).max()
        np.testing.assert_allclose(np.diag(gram), channel.sq_sum, rtol=1e-12)
        assert np.all(channel.absmax**2 * channel.count >= channel.sq_sum * (1 - 1e-12))
        assert np.all(channel.absmax**2 <= channel.sq_sum * (1 + 1e-12))


def test_statistics_match_a_direct_computation(classifier, minilm_tokenizer):
    """The hidden states Hugging Face returns are the inputs of each layer's query: same Gram, sum, abs-max
    (one batch of the same texts, shortest first as calibrate orders them, so the forward is the same)."""
    stats = calibrate(classifier, minilm_tokenizer, TEXTS, batch_size=len(TEXTS), max_length=16, progress=False)
    texts = sorted(TEXTS, key=len)
    batch = minilm_tokenizer(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        states = classifier.hf(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    for layer in range(classifier.bert.config.num_hidden_layers):
        x = states[layer][mask].double().numpy()
        measured = stats.inputs[layer_linears(layer)["query"]]
        np.testing.assert_allclose(measured.gram, x.T @ x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(measured.sum, x.sum(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(measured.absmax, np.abs(x).max(0), rtol=1e-12)


def test_query_output_gram_equals_the_analytic_projection(stats, classifier):
    """Σ qqᵀ for q = Wx + b is W G Wᵀ + W s bᵀ + b sᵀ Wᵀ + n b bᵀ (G, s, n: the input's Gram, sum, count)."""
    for layer in range(classifier.bert.config.num_hidden_layers):
        name = layer_linears(layer)["query"]
        linear = classifier.bert.get_submodule(name)
        w, b = linear.weight.double().detach().numpy(), linear.bias.double().detach().numpy()
        x = stats.inputs[name]
        analytic = w @ x.gram @ w.T + np.outer(w @ x.sum, b) + np.outer(b, w @ x.sum) + x.count * np.outer(b, b)
        scale = np.abs(analytic).max()
        np.testing.assert_allclose(stats.outputs[name].gram, analytic, rtol=1e-5, atol=1e-6 * scale)


def test_padding_and_batching_do_not_change_the_statistics(stats, classifier, minilm_tokenizer):
    single = calibrate(classifier, minilm_tokenizer, TEXTS, batch_size=1, max_length=16, progress=False)
    for name, channel in stats.inputs.items():
        other = single.inputs[name]
        assert other.count == channel.count
        np.testing.assert_allclose(other.gram, channel.gram, rtol=1e-6, atol=1e-6 * np.abs(channel.gram).max())
    np.testing.assert_allclose(single.hidden.absmax, stats.hidden.absmax, rtol=1e-5)


def test_deterministic_and_hooks_removed(stats, classifier, minilm_tokenizer):
    again = calibrate(classifier, minilm_tokenizer, TEXTS, batch_size=2, max_length=16, progress=False)
    assert all(np.array_equal(again.inputs[k].gram, v.gram) for k, v in stats.inputs.items())
    assert np.array_equal(again.hidden.gram, stats.hidden.gram)
    assert _hook_count(classifier) == 0


def _hook_count(module: torch.nn.Module) -> int:
    """Hooks on the modules calibrate hooks (transformers adds its own on BertLayer: not counted)."""
    hooked = (torch.nn.Linear, torch.nn.LayerNorm)
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules() if isinstance(m, hooked))


def test_hooks_removed_on_error(minilm_tokenizer):
    encoder = tiny_encoder()

    def failing_tokenizer(*args, **kwargs):
        raise RuntimeError("tokenizer broke")

    with pytest.raises(RuntimeError, match="tokenizer broke"):
        calibrate(encoder, failing_tokenizer, TEXTS, batch_size=2, max_length=16, progress=False)
    assert _hook_count(encoder) == 0


def test_bad_arguments():
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="texts is empty"):
        calibrate(encoder, None, [], batch_size=2, max_length=16)
    with pytest.raises(ValueError, match="batch_size and max_length must be > 0"):
        calibrate(encoder, None, TEXTS, batch_size=0, max_length=16)


def test_npz_round_trip(stats, tmp_path):
    path = tmp_path / "stats.npz"
    stats.save_npz(path)
    loaded = CalibrationStats.load_npz(path)
    assert loaded.meta == stats.meta
    assert set(loaded.inputs) == set(stats.inputs) and set(loaded.outputs) == set(stats.outputs)
    for name, channel in stats.inputs.items():
        other = loaded.inputs[name]
        assert other.count == channel.count and np.array_equal(other.gram, channel.gram)
        assert np.array_equal(other.absmax, channel.absmax)
    with np.load(path) as arrays:
        assert "stats/inputs/encoder.layer.0.intermediate.dense/gram" in arrays.files
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtefactError, match="junk.npz: not an icd calibration NPZ"):
        CalibrationStats.load_npz(tmp_path / "junk.npz")


def test_channel_stats_correlation_handles_dead_channels():
    channel = ChannelStats.zeros(3)
    x = torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 5.0], [3.0, 6.5, 5.0]])
    channel.update(x)
    corr = channel.correlation()
    assert np.allclose(np.diag(corr), 1.0)
    assert corr[0, 1] > 0.99 and corr[0, 2] == 0.0 and corr[1, 2] == 0.0
    np.testing.assert_allclose(channel.covariance(), np.cov(x.numpy().T, bias=True), atol=1e-12)


def test_layout_names_match_the_statistics_keys(stats, classifier):
    for dim in permutable_dims(classifier):
        assert set(input_readers(classifier, dim.name)) <= set(stats.inputs), dim.name
        if dim.kind.value == "qk":
            assert set(output_writers(classifier, dim.name)) <= set(stats.outputs)
