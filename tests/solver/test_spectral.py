from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from icd.solver import solve_locality
from icd.solver.spectral import spectral_order
from icd.solver.locality import symmetric_weights


def _path(n: int) -> sp.csr_matrix:
    return sp.diags([np.ones(n - 1), np.ones(n - 1)], [-1, 1]).tocsr()


def _is_chain(order: np.ndarray) -> bool:
    steps = np.diff(order)
    return bool(np.all(steps == 1) or np.all(steps == -1))


@pytest.mark.parametrize("n", [12, 500])  # dense and ARPACK eigensolvers
def test_spectral_recovers_hidden_chain(n: int) -> None:
    hidden = np.random.default_rng(3).permutation(n)
    shuffled = _path(n)[hidden][:, hidden]  # shuffled node k is chain node hidden[k]
    result = solve_locality(shuffled, method="spectral", refine=False)
    assert _is_chain(hidden[result.perm])
    assert result.cost_after == pytest.approx(2 * (n - 1))
    assert result.cost_before > result.cost_after


def test_louvain_recovers_hidden_chain_after_refinement() -> None:
    n = 40
    hidden = np.random.default_rng(5).permutation(n)
    result = solve_locality(_path(n)[hidden][:, hidden], method="louvain", refine=True, time_limit_s=10)
    assert _is_chain(hidden[result.perm])


def test_disconnected_graph_orders_components_contiguously() -> None:
    a, b = _path(6), _path(4)
    graph = sp.block_diag([a, b, sp.csr_matrix((2, 2))]).tocsr()  # two chains + two isolated nodes
    hidden = np.random.default_rng(0).permutation(12)
    order = hidden[spectral_order(symmetric_weights(graph[hidden][:, hidden]))]
    assert _is_chain(order[:6]) and set(order[:6]) == set(range(6))
    assert _is_chain(order[6:10]) and set(order[6:10]) == set(range(6, 10))
    assert set(order[10:]) == {10, 11}


@pytest.mark.parametrize("method", ["spectral", "louvain", "identity"])
def test_deterministic_for_a_seed(method: str) -> None:
    rng = np.random.default_rng(0)
    graph = sp.random(60, 60, density=0.1, random_state=1)
    graph = (graph + graph.T).tocsr()
    first = solve_locality(graph, method=method, seed=7, time_limit_s=30)
    second = solve_locality(graph, method=method, seed=7, time_limit_s=30)
    assert np.array_equal(first.perm, second.perm)
    assert first.cost_after <= first.cost_before
    del rng


def test_graph_without_edges_keeps_identity() -> None:
    result = solve_locality(sp.csr_matrix((5, 5)), method="spectral")
    assert result.perm.tolist() == [0, 1, 2, 3, 4]
    assert result.cost_before == result.cost_after == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"method": "annealing"}, "annealing"), ({"time_limit_s": 0}, "time_limit_s"), ({"window": 0}, "window")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        solve_locality(_path(4), **kwargs)


def test_negative_weights_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        solve_locality(-_path(4))


def test_result_summary_has_costs_and_time() -> None:
    summary = solve_locality(_path(6)).summary()
    assert {"method", "objective", "size", "cost_before", "cost_after", "seconds"} <= set(summary)
    assert summary["objective"] == "locality"
