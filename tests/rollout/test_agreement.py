"""Output agreement in the figures that fit the task (embeddings vs classifiers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.rollout.agreement import OutputTask, agreement, cosine_rows, nearest_other, task_for_output


def test_task_from_output_name():
    assert task_for_output("logits") is OutputTask.CLASSIFIER
    assert task_for_output("embedding") is OutputTask.EMBEDDING
    assert task_for_output(None) is OutputTask.EMBEDDING


def test_embedding_agreement_has_cosine_and_nn_and_no_argmax():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 16))
    a = agreement(OutputTask.EMBEDDING, ref, ref + 1e-3 * rng.normal(size=ref.shape))
    assert a.cosine_mean > 0.999 and a.nn_agreement == 1.0 and a.argmax_agreement is None
    assert "argmax" not in a.text() and "NN agreement 1.000" in a.text()
    assert "argmax_agreement" not in a.to_dict() and a.headline == a.cosine_mean
    shuffled = agreement(OutputTask.EMBEDDING, ref, rng.permutation(ref))
    assert shuffled.nn_agreement < 0.5


def test_classifier_agreement_has_argmax_and_logit_cosine():
    ref = np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 3.0]])
    cand = np.array([[2.0, 1.1], [1.0, 0.5], [1.0, 3.0]])
    a = agreement(OutputTask.CLASSIFIER, ref, cand)
    assert a.argmax_agreement == pytest.approx(2 / 3) and a.nn_agreement is None
    assert a.text().startswith("argmax 0.667, logit cosine mean") and a.headline == a.argmax_agreement


def test_nearest_other_never_picks_itself():
    x = np.eye(4) + 0.1
    assert all(nearest_other(x) != np.arange(4))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=12))
def test_cosine_of_a_row_with_itself_is_one(row):
    x = np.array([row])
    if np.linalg.norm(x) > 1e-6:
        assert cosine_rows(x, x)[0] == pytest.approx(1.0)
        assert cosine_rows(x, -x)[0] == pytest.approx(-1.0)
