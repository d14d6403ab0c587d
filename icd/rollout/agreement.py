"""Output agreement of a candidate with a reference, in the figures that fit the model's task.

* embedding models (output ``embedding``): cosine of each pair of output vectors (mean and min) and
  nearest-neighbour agreement over the request set (each input's most similar *other* input is the same under
  both models) — argmax of an embedding vector means nothing and is not shown;
* classifiers (output ``logits``): argmax agreement (same predicted class) and the cosine of the logit vectors.

The A/B report, the blue-green golden check, the shadow comparator and ``icd demo`` all report through
:class:`Agreement`, so a figure means the same wherever it is shown.

Example:
    a = agreement(OutputTask.EMBEDDING, reference_rows, candidate_rows)
    print(a.text())          # "cosine mean 0.9991, min 0.9950; NN agreement 0.969 (n=64)"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class OutputTask(str, Enum):
    """What a served model's output is, which decides how agreement is measured."""

    EMBEDDING = "embedding"
    """A vector per input (sentence embedding): cosine mean / min and nearest-neighbour agreement."""
    CLASSIFIER = "classifier"
    """Class logits per input: argmax agreement and logit cosine."""


def task_for_output(name: str | None) -> OutputTask:
    """The task an output tensor's name implies: ``logits`` → classifier, anything else → embedding."""
    return OutputTask.CLASSIFIER if name and "logit" in name.lower() else OutputTask.EMBEDDING


def cosine_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally shaped arrays (two zero rows give 1.0, one gives 0.0)."""
    x2, y2 = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    if x2.shape != y2.shape:
        raise ValueError(f"shapes differ: {x2.shape} vs {y2.shape}")
    nx, ny = np.linalg.norm(x2, axis=1), np.linalg.norm(y2, axis=1)
    dot = (x2 * y2).sum(axis=1)
    both_zero = (nx == 0) & (ny == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / (nx * ny))
    return np.nan_to_num(cos, nan=0.0)


def nearest_other(rows: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar *other* row (ties: lowest index)."""
    x = np.asarray(rows, dtype=float)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


@dataclass(frozen=True)
class Agreement:
    """How a candidate's outputs agree with the reference's on the same ``n`` inputs."""

    task: OutputTask
    n: int
    cosine_mean: float | None = None
    """Mean cosine of the output vectors (embeddings) or of the logit vectors (classifiers)."""
    cosine_min: float | None = None
    nn_agreement: float | None = None
    """Embeddings only: fraction of inputs whose nearest other input is the same under both (needs n ≥ 3)."""
    argmax_agreement: float | None = None
    """Classifiers only: fraction of inputs with the same predicted class."""
    failed_pairs: int = 0
    """Inputs that did not get an answer from both models (not counted in ``n``)."""

    @property
    def headline(self) -> float | None:
        """The figure a gate compares: cosine mean (embeddings) or argmax agreement (classifiers)."""
        return self.cosine_mean if self.task is OutputTask.EMBEDDING else self.argmax_agreement

    def text(self) -> str:
        """One line for tables: only the figures that fit the task."""
        if self.n == 0:
            return f"not measured (no input answered by both; {self.failed_pairs} failed)"
        if self.task is OutputTask.EMBEDDING:
            nn = "n/a (n < 3)" if self.nn_agreement is None else f"{self.nn_agreement:.3f}"
            return f"cosine mean {self.cosine_mean:.4f}, min {self.cosine_min:.4f}; NN agreement {nn} (n={self.n})"
        return f"argmax {self.argmax_agreement:.3f}, logit cosine mean {self.cosine_mean:.4f} (n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task.value, "n": self.n, "failed_pairs": self.failed_pairs,
                               "cosine_mean": self.cosine_mean, "cosine_min": self.cosine_min}
        if self.task is OutputTask.EMBEDDING:
            out["nn_agreement"] = self.nn_agreement
        else:
            out["argmax_agreement"] = self.argmax_agreement
            out["logit_cosine_mean"] = self.cosine_mean
        return out


def agreement(task: OutputTask, reference: np.ndarray, candidate: np.ndarray, failed_pairs: int = 0) -> Agreement:
    """Compare ``candidate`` rows with ``reference`` rows (same inputs, same order)."""
    ref, cand = np.atleast_2d(np.asarray(reference, dtype=float)), np.atleast_2d(np.asarray(candidate, dtype=float))
    if ref.size == 0:
        return Agreement(task, 0, failed_pairs=failed_pairs)
    if ref.shape != cand.shape:
        raise ValueError(f"agreement: reference {ref.shape} and candidate {cand.shape} differ in shape")
    cos = cosine_rows(ref, cand)
    n = int(ref.shape[0])
    if task is OutputTask.EMBEDDING:
        nn = float(np.mean(nearest_other(ref) == nearest_other(cand))) if n >= 3 else None
        return Agreement(task, n, float(cos.mean()), float(cos.min()), nn_agreement=nn, failed_pairs=failed_pairs)
    argmax = float(np.mean(ref.argmax(axis=1) == cand.argmax(axis=1)))
    return Agreement(task, n, float(cos.mean()), float(cos.min()), argmax_agreement=argmax, failed_pairs=failed_pairs)
