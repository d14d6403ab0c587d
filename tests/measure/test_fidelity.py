"""Fidelity metrics on cases with known answers."""

from __future__ import annotations

import pytest
import torch

from icd.measure.fidelity import fidelity, near_ties, nearest_other


def _points() -> torch.Tensor:
    # two tight clusters: {0, 1} and {2, 3}
    return torch.tensor([[1.0, 0.0, 0.1], [1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 1.0, 0.0]])


def test_identical_outputs_agree_fully():
    ref = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    f = fidelity(ref, ref.clone())
    assert f.cos_mean == pytest.approx(1.0) and f.cos_min == pytest.approx(1.0)
    assert f.nn_agreement == 1.0 and f.argmax_agreement is None and f.count == 20


def test_scaling_and_negation_keep_neighbours():
    ref = _points()
    assert fidelity(ref, 5.0 * ref).cos_mean == pytest.approx(1.0)
    neg = fidelity(ref, -ref)
    assert neg.cos_mean == pytest.approx(-1.0) and neg.nn_agreement == 1.0


def test_orthogonal_outputs_have_zero_cosine():
    ref = torch.eye(4)
    cand = torch.roll(torch.eye(4), 1, dims=1)  # e_i -> e_{i+1}: orthogonal to the reference row
    f = fidelity(ref, cand)
    assert f.cos_mean == pytest.approx(0.0) and f.cos_min == pytest.approx(0.0)


def test_swapping_clusters_members_breaks_known_fraction_of_neighbours():
    ref = _points()
    assert nearest_other(ref).tolist() == [1, 0, 3, 2]
    cand = ref[[0, 2, 1, 3]]  # texts 1 and 2 swap outputs: neighbours become 0<->2? compute by hand below
    # cand rows: 0:a 1:c 2:b 3:d  → nearest: 0→2 (b), 1→3 (d), 2→0, 3→1 — none matches [1, 0, 3, 2]
    assert nearest_other(cand).tolist() == [2, 3, 0, 1]
    assert fidelity(ref, cand).nn_agreement == 0.0
    half = ref.clone()
    half[3] = ref[3] + torch.tensor([0.0, 0.0, 0.05])  # a small change keeps every neighbour
    assert fidelity(ref, half).nn_agreement == 1.0


def test_argmax_agreement_for_classification():
    ref = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    cand = torch.tensor([[2.0, 1.0], [3.0, 0.0], [1.0, 0.5], [0.1, 0.2]])
    f = fidelity(ref, cand, task="sequence_classification")
    assert f.argmax_agreement == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same 2-D shape"):
        fidelity(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least 2"):
        fidelity(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="task"):
        fidelity(torch.ones(2, 2), torch.ones(2, 2), task="regression")


def test_measurements_carry_tags():
    f = fidelity(_points(), _points())
    tags = [m.tag for m in f.measurements()]
    assert tags == ["cos_mean", "cos_min", "nn_agreement"]


def test_near_ties_count_the_texts_whose_two_nearest_others_are_almost_equally_near():
    # text 0 sits between 1 and 2 (cosines 0.8 and 0.8 + 5e-4); 3 is nearest to 1 by a wide margin
    angle = torch.acos(torch.tensor([0.8, 0.8005], dtype=torch.float64))
    ref = torch.stack([torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                       torch.stack([torch.cos(angle[0]), torch.sin(angle[0]), torch.tensor(0.0, dtype=torch.float64)]),
                       torch.stack([torch.cos(angle[1]), -torch.sin(angle[1]), torch.tensor(0.0, dtype=torch.float64)]),
                       torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)])
    assert near_ties(ref) == 1
    assert near_ties(ref, margin=1e-4) == 0
    assert near_ties(ref[:2]) == 0  # two texts: no second neighbour
