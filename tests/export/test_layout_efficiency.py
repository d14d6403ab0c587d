"""The layout_efficiency measure (block locality of |correlation| after a permutation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.export.layout_efficiency import block_locality, layout_efficiency


def test_a_layout_that_groups_correlated_channels_scores_higher():
    n, block = 64, 32
    rng = np.random.default_rng(0)
    group = rng.permutation(np.repeat([0, 1], block))  # two hidden groups, scattered
    corr = (group[:, None] == group[None, :]).astype(float)
    grouped = np.argsort(group, kind="stable")  # new channel j = old channel grouped[j]
    assert block_locality(corr, grouped, block) == 1.0
    assert block_locality(corr, np.arange(n), block) < 0.7


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 80), st.integers(0, 2**31 - 1))
def test_locality_is_a_share_and_ignores_moves_inside_blocks(n, seed):
    rng = np.random.default_rng(seed)
    corr = rng.normal(size=(n, n))
    perm = rng.permutation(n)
    value = block_locality(corr, perm, 8)
    assert 0.0 <= value <= 1.0 + 1e-12
    shuffled = perm.copy()
    for start in range(0, n, 8):
        shuffled[start:start + 8] = rng.permutation(shuffled[start:start + 8])
    assert np.isclose(block_locality(corr, shuffled, 8), value)


def test_layout_efficiency_uses_dims_with_both_artefacts(tmp_path):
    corr = np.eye(40) + 0.5
    path = tmp_path / "c.npz"
    np.savez(path, hidden=corr, **{"layer0.ffn": np.ones((3, 3))})
    perms = {"hidden": np.arange(40)[::-1].copy(), "layer0.ffn": np.arange(5)}  # ffn sizes differ: skipped
    value, dims = layout_efficiency(perms, path)
    assert dims == ["hidden"] and value == block_locality(corr, perms["hidden"])
    assert layout_efficiency(perms, None) == (None, [])


def test_sparse_run_graphs_are_read_and_only_free_dims_count(tmp_path):
    from scipy import sparse

    rng = np.random.default_rng(1)
    dense = np.abs(rng.normal(size=(64, 64)))
    dense = dense + dense.T
    upper = sparse.triu(sparse.coo_matrix(dense), k=1).tocoo()
    path = tmp_path / "run.npz"
    np.savez(path, schema=np.asarray("icd.correlation/v1"), **{
        "graph/layer0.ffn/row": upper.row.astype(np.int32), "graph/layer0.ffn/col": upper.col.astype(np.int32),
        "graph/layer0.ffn/data": upper.data.astype(np.float32), "graph/layer0.ffn/shape": np.asarray([64, 64]),
        "graph/layer0.heads/row": np.asarray([0]), "graph/layer0.heads/col": np.asarray([1]),
        "graph/layer0.heads/data": np.asarray([1.0]), "graph/layer0.heads/shape": np.asarray([4, 4])})
    perm = rng.permutation(64)
    value, dims = layout_efficiency({"layer0.ffn": perm, "layer0.heads": np.arange(4)}, path)
    assert dims == ["layer0.ffn"]
    assert value == pytest.approx(block_locality(dense, perm), rel=1e-6)
