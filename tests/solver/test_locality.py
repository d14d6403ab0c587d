from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from icd.solver import locality_cost, positions


def test_hand_computed_cost() -> None:
    # w01 = 1, w12 = 2 (both directions stored)
    W = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], dtype=float))
    assert locality_cost(W) == pytest.approx(2 * (1 * 1 + 2 * 1))
    # perm [1, 0, 2]: old 1 at pos 0, old 0 at pos 1, old 2 at pos 2 -> |pos0-pos1| = 1, |pos1-pos2| = 2
    assert locality_cost(W, [1, 0, 2]) == pytest.approx(2 * (1 * 1 + 2 * 4))
    # perm [0, 2, 1]: old 2 at pos 1 -> |pos0-pos1| = 2, |pos1-pos2| = 1
    assert locality_cost(W, [0, 2, 1]) == pytest.approx(2 * (1 * 4 + 2 * 1))


def test_asymmetric_entries_count_once_and_diagonal_is_free() -> None:
    W = np.zeros((4, 4))
    W[0, 3] = 5.0
    W[2, 2] = 100.0
    assert locality_cost(W) == pytest.approx(5.0 * 9)
    assert locality_cost(W, [3, 0, 1, 2]) == pytest.approx(5.0 * 1)


def test_positions_inverts_perm() -> None:
    perm = np.array([2, 0, 3, 1])
    pos = positions(perm)
    assert np.array_equal(pos[perm], np.arange(4))


@pytest.mark.parametrize("perm", [[0, 1], [0, 0, 1], [0, 1, 3]])
def test_bad_perm_is_rejected(perm: list[int]) -> None:
    with pytest.raises(ValueError, match="perm"):
        locality_cost(np.eye(3), perm)


def test_non_square_graph_is_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        locality_cost(np.ones((2, 3)))
