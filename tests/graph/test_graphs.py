"""Correlation graphs per permutable dimension: symmetric, non-negative, zero diagonal, sparse, block-diagonal
where the dim has blocks, and the edges the statistics imply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from icd.calibrate import CalibrationStats, ChannelStats, calibrate
from icd.graph import build_graph, build_graphs, graph_from_arrays, graph_to_arrays, head_affinity, top_k_graph
from icd.model.layout import Dim, DimKind, permutable_dims
from tests.model.tiny import tiny_encoder

TEXTS = [
    "Return a new sorted list from the items in iterable.",
    "Decode the object as JSON and return the result.",
    "Join two or more pathname components, inserting the separator as needed.",
    "Return True if the string is a valid identifier according to the language definition.",
    "Create and return a temporary directory.",
    "Raise an exception if the condition is false.",
]


def assert_valid_graph(graph: sparse.csr_matrix, size: int) -> None:
    assert isinstance(graph, sparse.csr_matrix) and graph.shape == (size, size)
    assert abs(graph - graph.T).max() == 0.0 if graph.nnz else True
    assert np.all(graph.diagonal() == 0.0)
    assert np.all(graph.data > 0.0) and np.all(graph.data <= 1.0 + 1e-12)


@pytest.fixture(scope="module")
def tiny_stats(minilm_tokenizer):
    encoder = tiny_encoder()
    return encoder, calibrate(encoder, minilm_tokenizer, TEXTS, batch_size=3, max_length=32, progress=False)


def test_every_dim_gets_a_valid_graph(tiny_stats):
    encoder, stats = tiny_stats
    dims = permutable_dims(encoder)
    graphs = build_graphs(stats, dims, top_k=4)
    assert list(graphs) == [d.name for d in dims]
    for dim in dims:
        graph = graphs[dim.name]
        assert_valid_graph(graph, dim.size)
        assert graph.nnz > 0
        degrees = np.diff(graph.indptr)
        assert degrees.min() >= min(4, (dim.block or dim.size) - 1)  # every node keeps its top-k
        if dim.block:
            rows, cols = graph.nonzero()
            assert np.all(rows // dim.block == cols // dim.block)  # block-diagonal


def test_top_k_none_keeps_all_edges(tiny_stats):
    encoder, stats = tiny_stats
    dim = next(d for d in permutable_dims(encoder) if d.name == "layer0.heads")
    graph = build_graph(stats, dim, top_k=None)
    assert graph.nnz == dim.size * (dim.size - 1)


def test_known_correlations_become_edges():
    # channel 1 = 2 * channel 0; channel 2 = -channel 0 + noise; channel 3 independent; channel 4 constant
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=2000)
    x = np.stack([x0, 2 * x0, -x0 + 0.01 * rng.normal(size=2000), rng.normal(size=2000), np.full(2000, 3.0)], 1)
    channel = ChannelStats.zeros(5)
    channel.update(torch.from_numpy(x))
    stats = CalibrationStats(inputs={}, outputs={}, hidden=channel)
    graph = build_graph(stats, Dim("hidden", 5, DimKind.HIDDEN), top_k=None).toarray()
    assert graph[0, 1] == pytest.approx(1.0) and graph[0, 2] > 0.99
    assert graph[0, 3] < 0.1
    assert np.all(graph[4] == 0.0) and np.all(graph[:, 4] == 0.0)  # a dead channel has no edges


def test_head_affinity_is_rms_cross_head_correlation():
    corr = np.eye(8)
    np.testing.assert_allclose(head_affinity(corr, heads=2), np.diag([0.5, 0.5]))  # ||I_4||_F / 4; no cross-head
    corr = np.ones((8, 8))
    np.testing.assert_allclose(head_affinity(corr, heads=4), np.ones((4, 4)))


def test_missing_statistics_name_the_dim():
    stats = CalibrationStats(inputs={}, outputs={}, hidden=ChannelStats.zeros(8))
    with pytest.raises(ValueError, match="'layer0.ffn': no calibration statistics for 'encoder.layer.0.output.dense'"):
        build_graph(stats, Dim("layer0.ffn", 16, DimKind.FFN, 0), top_k=2)
    with pytest.raises(ValueError, match="dim 'hidden'.*empty"):
        build_graph(stats, Dim("hidden", 8, DimKind.HIDDEN), top_k=2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 24), k=st.integers(1, 30), seed=st.integers(0, 10_000), block=st.sampled_from([None, 2]))
def test_top_k_graph_properties(n, k, seed, block):
    if block and n % block:
        n += 1
    affinity = np.random.default_rng(seed).uniform(-1, 1, size=(n, n))
    affinity = (affinity + affinity.T) / 2
    graph = top_k_graph(affinity, k, block=block)
    assert_valid_graph(graph, n)
    assert graph.nnz <= 2 * k * n
    dense = graph.toarray()
    neighbours = (block or n) - 1
    for i in range(n):  # the strongest allowed neighbour of each node survives
        allowed = [j for j in range(n) if j != i and (block is None or j // block == i // block)]
        if allowed and neighbours:
            best = max(allowed, key=lambda j: abs(affinity[i, j]))
            assert dense[i, best] == pytest.approx(abs(affinity[i, best]))


def test_graph_array_round_trip():
    graph = top_k_graph(np.random.default_rng(1).uniform(size=(10, 10)), 3)
    back = graph_from_arrays(graph_to_arrays(graph, "graph/hidden"), "graph/hidden")
    assert (back != graph).nnz == 0


def test_top_k_graph_rejects_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        top_k_graph(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        top_k_graph(np.zeros((3, 3)), 0)
    with pytest.raises(ValueError, match="block 2 does not divide size 3"):
        top_k_graph(np.zeros((3, 3)), 1, block=2)


def test_affinities_are_equivariant_under_folded_permutations(tiny_stats, minilm_tokenizer):
    """Calibrating the permuted model gives the permuted affinities of the original: statistics, graphs and the
    weight folding agree on what every dim's channels are."""
    import copy

    from icd.graph import dim_affinity
    from icd.transforms.permute import apply_permutations_, head_rows

    encoder, stats = tiny_stats
    dims = permutable_dims(encoder)
    rng = np.random.default_rng(3)
    perms = {}
    for dim in dims:
        block = dim.block or dim.size
        perms[dim.name] = np.concatenate([s + rng.permutation(block) for s in range(0, dim.size, block)])
    permuted = copy.deepcopy(encoder)
    apply_permutations_(permuted, perms)
    after = calibrate(permuted, minilm_tokenizer, TEXTS, batch_size=3, max_length=32, progress=False)
    head_dim = encoder.bert.config.hidden_size // encoder.bert.config.num_attention_heads
    for dim in dims:
        perm = perms[dim.name]
        if dim.kind in (DimKind.QK, DimKind.VO):
            perm = perm[head_rows(perms[f"layer{dim.layer}.heads"], head_dim)]
        expected = dim_affinity(stats, dim)[np.ix_(perm, perm)]
        np.testing.assert_allclose(dim_affinity(after, dim), expected, atol=2e-4, err_msg=dim.name)
