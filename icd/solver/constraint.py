"""Constraints on which permutations a solver may return.

Convention (as everywhere in icd): ``perm[j]`` is the *old* channel placed at *new* position ``j``
(``new = old[perm]``).

Two modes, which may be combined:

* ``within_blocks`` (``block=B``): positions ``[kB, (k+1)B)`` keep holding channels of old block ``k`` — blocks stay
  in place and channels move only inside their block (the within-head ``qk`` / ``vo`` dims, ``B`` = head dim).
* ``whole_groups`` (``group=G``): the channels of each old group ``[kG, (k+1)G)`` stay together, landing on one
  aligned group of positions, in any order inside it — an N:M pattern already applied along this dim (``G = m``)
  stays valid (the re-permute step after sparsity).

Combined (``block=32, group=4``): groups of 4 move as units, and only inside their block of 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class ConstraintMode(str, Enum):
    """The kinds of restriction a :class:`Constraint` expresses."""

    WITHIN_BLOCKS = "within_blocks"
    """Channels move only inside their aligned block; blocks keep their place."""
    WHOLE_GROUPS = "whole_groups"
    """Aligned groups move only as a unit (free order inside the unit)."""


@dataclass(frozen=True)
class Constraint:
    """Which permutations are allowed.

    Attributes:
        block: size of the blocks channels must stay in (``within_blocks``); ``None`` = no block constraint.
        group: size of the groups that move as one unit (``whole_groups``); ``None`` = channels move alone.
    """

    block: int | None = None
    group: int | None = None

    def __post_init__(self) -> None:
        for field in ("block", "group"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"Constraint.{field}: must be a positive integer or None, got {value!r}")
        if self.block is not None and self.group is not None and self.block % self.group:
            raise ValueError(
                f"Constraint.block: {self.block} is not a multiple of Constraint.group={self.group}"
            )

    @property
    def modes(self) -> tuple[ConstraintMode, ...]:
        """The modes in force (empty for an unconstrained solve)."""
        out: list[ConstraintMode] = []
        if self.block is not None:
            out.append(ConstraintMode.WITHIN_BLOCKS)
        if self.group is not None:
            out.append(ConstraintMode.WHOLE_GROUPS)
        return tuple(out)

    def check_size(self, size: int) -> None:
        """Raise ``ValueError`` unless a dimension of ``size`` channels divides into the blocks and groups."""
        for field in ("block", "group"):
            value = getattr(self, field)
            if value is not None and size % value:
                raise ValueError(f"Constraint.{field}: {value} does not divide the dimension size {size}")

    def unit_size(self) -> int:
        """Channels per movable unit (``group`` or 1)."""
        return 1 if self.group is None else int(self.group)

    def block_size(self, size: int) -> int:
        """Channels per block (``block`` or the whole dimension)."""
        return size if self.block is None else int(self.block)

    def allows(self, perm: np.ndarray | list[int]) -> bool:
        """Whether ``perm`` is a permutation of ``range(len(perm))`` that respects this constraint."""
        return not self.violations(perm)

    def violations(self, perm: np.ndarray | list[int]) -> list[str]:
        """Human-readable reasons ``perm`` is not allowed (empty when it is)."""
        arr = np.asarray(perm)
        size = arr.size
        if arr.ndim != 1 or not np.array_equal(np.sort(arr), np.arange(size)):
            return [f"not a permutation of range({size})"]
        problems: list[str] = []
        for field in ("block", "group"):
            value = getattr(self, field)
            if value is not None and size % value:
                problems.append(f"{field}={value} does not divide size {size}")
        if problems:
            return problems
        if self.block is not None:
            blocks = arr.reshape(-1, self.block) // self.block
            moved = np.nonzero(blocks != np.arange(blocks.shape[0])[:, None])[0]
            if moved.size:
                problems.append(f"position block {int(moved[0])} holds channels of another block")
        if self.group is not None:
            groups = arr.reshape(-1, self.group) // self.group
            split = np.nonzero((groups != groups[:, :1]).any(axis=1))[0]
            if split.size:
                problems.append(f"position group {int(split[0])} mixes channels of different groups")
        return problems


UNCONSTRAINED = Constraint()

WITHIN_HEAD_KINDS = ("qk", "vo")  # dims permuted only inside each head's block (icd/model/layout.py)


def constraint_for_dim(kind: str, head_dim: int | None = None, nm_group: int | None = None) -> Constraint:
    """The constraint of a permutable dimension of a BERT encoder.

    Args:
        kind: ``hidden``, ``ffn``, ``heads``, ``qk`` or ``vo`` (see ``icd/model/layout.py``).
        head_dim: d = H / A, required for ``qk`` / ``vo`` (within-head blocks).
        nm_group: ``m`` when an N:M pattern is already applied along this dim (re-permute after sparsity): groups
            of ``m`` then move only as a unit.

    Example:
        >>> constraint_for_dim("vo", head_dim=32, nm_group=4)
        Constraint(block=32, group=4)
    """
    if kind not in ("hidden", "ffn", "heads", *WITHIN_HEAD_KINDS):
        raise ValueError(f"kind: unknown dimension kind {kind!r} (hidden, ffn, heads, qk, vo)")
    block = None
    if kind in WITHIN_HEAD_KINDS:
        if head_dim is None:
            raise ValueError(f"head_dim: required for kind {kind!r}")
        block = head_dim
    return Constraint(block=block, group=nm_group)
