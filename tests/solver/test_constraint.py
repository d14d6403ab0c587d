from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.solver import Constraint, ConstraintMode, solve_locality


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"block": 0}, "block"), ({"group": -2}, "group"), ({"block": 2.5}, "block"), ({"block": 6, "group": 4}, "block")],
)
def test_bad_sizes_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"Constraint.{field}"):
        Constraint(**kwargs)


def test_size_must_divide() -> None:
    with pytest.raises(ValueError, match="Constraint.block: 32"):
        Constraint(block=32).check_size(48)


def test_modes() -> None:
    assert Constraint().modes == ()
    assert Constraint(block=8, group=4).modes == (ConstraintMode.WITHIN_BLOCKS, ConstraintMode.WHOLE_GROUPS)


def test_allows() -> None:
    c = Constraint(block=4, group=2)
    assert c.allows([2, 3, 0, 1, 4, 5, 6, 7])
    assert c.allows([3, 2, 1, 0, 6, 7, 5, 4])
    assert not c.allows([0, 2, 1, 3, 4, 5, 6, 7])  # splits group {0,1}
    assert not c.allows([4, 5, 2, 3, 0, 1, 6, 7])  # group {4,5} leaves its block
    assert not c.allows([0, 0, 1, 2, 3, 4, 5, 6])


@st.composite
def constrained_problem(draw):
    group = draw(st.sampled_from([None, 1, 2, 4]))
    units_per_block = draw(st.integers(1, 4))
    use_block = draw(st.booleans())
    unit = group or 1
    block = unit * units_per_block if use_block else None
    blocks = draw(st.integers(1, 4))
    size = (block or unit * units_per_block) * blocks
    seed = draw(st.integers(0, 2**16))
    density = draw(st.floats(0.05, 0.9))
    method = draw(st.sampled_from(["spectral", "louvain", "identity"]))
    return Constraint(block=block, group=group), size, seed, density, method


@settings(max_examples=40, deadline=None)
@given(constrained_problem())
def test_solution_respects_constraint(problem) -> None:
    constraint, size, seed, density, method = problem
    graph = sp.random(size, size, density=density, random_state=seed)
    result = solve_locality(graph, method=method, seed=seed, constraint=constraint, time_limit_s=5)
    assert sorted(result.perm.tolist()) == list(range(size))
    assert constraint.allows(result.perm), constraint.violations(result.perm)
    assert result.cost_after <= result.cost_before + 1e-9


def test_constrained_solve_improves_blocks_of_chains() -> None:
    # 4 blocks of 8, each block a shuffled chain: within_blocks can restore every chain.
    chain = sp.diags([np.ones(7), np.ones(7)], [-1, 1])
    rng = np.random.default_rng(0)
    shuffles = [rng.permutation(8) for _ in range(4)]
    graph = sp.block_diag([chain.tocsr()[s][:, s] for s in shuffles]).tocsr()
    result = solve_locality(graph, constraint=Constraint(block=8))
    assert Constraint(block=8).allows(result.perm)
    assert result.cost_after == pytest.approx(4 * 7 * 2)


def test_constraint_for_dim() -> None:
    from icd.solver import constraint_for_dim

    assert constraint_for_dim("hidden") == Constraint()
    assert constraint_for_dim("ffn", nm_group=4) == Constraint(group=4)
    assert constraint_for_dim("vo", head_dim=32, nm_group=4) == Constraint(block=32, group=4)
    with pytest.raises(ValueError, match="head_dim"):
        constraint_for_dim("qk")
    with pytest.raises(ValueError, match="kind"):
        constraint_for_dim("rows")


def test_re_permute_after_nm_keeps_the_pattern_valid() -> None:
    """Stage 6: after 2:4 along a dim, a whole_groups re-solve leaves the kept set of every group unchanged."""
    from icd.solver import nm_mask

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 64))
    pruned = weight * nm_mask(weight, 2, 4)
    graph = np.abs(np.corrcoef(rng.standard_normal((200, 64)), rowvar=False))
    result = solve_locality(graph, constraint=Constraint(block=32, group=4))
    moved = pruned[:, result.perm]
    assert (moved.reshape(16, 16, 4) != 0).sum(axis=2).max() <= 2  # still a valid 2:4 pattern
    assert result.cost_after <= result.cost_before
