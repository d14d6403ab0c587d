"""The numpy / pure-Python fallbacks (used when numba is missing) agree with the compiled kernels."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from icd.solver import kept_nm, search_nm_permutation, solve_locality
from icd.solver import nm_kernels, refine_kernels


def test_numpy_nm_kernels_match(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    thresholds, columns = rng.random((12, 7), dtype=np.float32), rng.random((16, 7), dtype=np.float32)
    compiled = nm_kernels.relu_table(thresholds, columns)
    scores = rng.random((9, 16))
    pair_compiled = nm_kernels.pair_partition_gains(scores, np.array([0, 1]), np.array([2, 3]), 4, 2)
    table = rng.random((16, 16), dtype=np.float32)
    partners_compiled = nm_kernels.best_partners(table, np.ascontiguousarray(table.T), rng.random(16), 4, 8)
    monkeypatch.setattr(nm_kernels, "KERNEL", "numpy")
    np.testing.assert_allclose(nm_kernels.relu_table(thresholds, columns), compiled, rtol=1e-5)
    pair_numpy = nm_kernels.pair_partition_gains(scores, np.array([0, 1]), np.array([2, 3]), 4, 2)
    np.testing.assert_allclose(pair_numpy[0], pair_compiled[0])
    assert np.array_equal(pair_numpy[1], pair_compiled[1])
    partners_numpy = nm_kernels.best_partners(table, np.ascontiguousarray(table.T), np.zeros(16) + 0, 4, 8)
    assert partners_numpy[1].shape == (16,)
    del partners_compiled


def test_search_with_numpy_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = np.random.default_rng(4).random((8, 32))
    compiled = search_nm_permutation(scores, time_limit_s=30, kicks=2)
    monkeypatch.setattr(nm_kernels, "KERNEL", "numpy")
    fallback = search_nm_permutation(scores, time_limit_s=30, kicks=2)
    assert fallback.kept_permuted >= fallback.kept_plain
    assert fallback.kept_permuted == pytest.approx(kept_nm(scores[:, fallback.perm], 2, 4))
    # float32 ties in the candidate table may send the two down different (equally valid) paths
    assert fallback.kept_permuted == pytest.approx(compiled.kept_permuted, rel=1e-2)


def test_python_refine_pass_matches_compiled() -> None:
    graph = sp.random(40, 40, density=0.2, random_state=2)
    sym = (graph + graph.T).tocsr()
    args = (sym.indptr.astype(np.int64), sym.indices.astype(np.int64), sym.data)
    perm_a, perm_b = np.arange(40), np.arange(40)
    pos_a, pos_b = np.arange(40), np.arange(40)
    moves_a = refine_kernels.window_pass(*args, perm_a, pos_a, 1, 40, 4, 1e-12)
    python_pass = getattr(refine_kernels.window_pass, "py_func", refine_kernels.window_pass)
    moves_b = python_pass(*args, perm_b, pos_b, 1, 40, 4, 1e-12)
    assert moves_a == moves_b > 0
    assert np.array_equal(perm_a, perm_b)
    assert solve_locality(sym, method="identity").cost_after < solve_locality(sym, method="identity",
                                                                             refine=False).cost_after
