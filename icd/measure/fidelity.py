"""Fidelity of a candidate model's outputs against a reference model's, on the same texts.

* ``cos_mean`` / ``cos_min``: cosine similarity of each text's output vector (embedding or logits).
* ``nn_agreement``: for each text, its nearest *other* text by cosine is the same under both models (fraction).
* ``argmax_agreement``: fraction of texts with the same predicted class (classification only, else None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from icd.measure.metrics import Measurement

CLASSIFICATION_TASK = "sequence_classification"


@dataclass(frozen=True)
class Fidelity:
    """Agreement of candidate outputs with reference outputs over ``count`` texts."""

    cos_mean: float
    cos_min: float
    nn_agreement: float
    argmax_agreement: float | None
    count: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def measurements(self, how: str = "") -> list[Measurement]:
        """The figures as metric-table measurements (argmax agreement only when measured)."""
        suffix = f"; {how}" if how else ""
        out = [
            Measurement("cos_mean", self.cos_mean, f"mean cosine over {self.count} texts{suffix}"),
            Measurement("cos_min", self.cos_min, f"min cosine over {self.count} texts{suffix}"),
            Measurement("nn_agreement", self.nn_agreement, f"nearest other text agrees, {self.count} texts{suffix}"),
        ]
        if self.argmax_agreement is not None:
            out.append(Measurement("argmax_agreement", self.argmax_agreement, f"{self.count} texts{suffix}"))
        return out


def _other_similarities(outputs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row with every *other* row (float64; the diagonal is -inf)."""
    unit = torch.nn.functional.normalize(outputs.double(), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(float("-inf"))
    return sim


def nearest_other(outputs: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar *other* row (ties: lowest index)."""
    return _other_similarities(outputs).argmax(dim=1)


NEAR_TIE_MARGIN = 1e-3
"""Cosine margin under which a text's nearest and second-nearest other texts count as a near tie."""


def near_tie_margins(outputs: torch.Tensor) -> torch.Tensor:
    """Each row's cosine to its most similar *other* row minus that to its second most similar (needs 3+ rows)."""
    top = _other_similarities(outputs).topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def near_ties(outputs: torch.Tensor, margin: float = NEAR_TIE_MARGIN) -> int:
    """How many rows have their most and second-most cosine-similar *other* rows within ``margin`` of each other:
    any small error can swap those two, so each such text can flip NN agreement by itself (bench/nn_noise.py)."""
    if outputs.shape[0] < 3:
        return 0
    return int((near_tie_margins(outputs) < margin).sum().item())


def fidelity(ref: torch.Tensor, cand: torch.Tensor, task: str = "embedding") -> Fidelity:
    """Compare ``cand`` outputs with ``ref`` outputs (rows = texts, same order).

    Args:
        ref: reference outputs, shape texts × features.
        cand: candidate outputs, same shape.
        task: ``"embedding"`` or ``"sequence_classification"`` (adds argmax agreement).

    Raises:
        ValueError: shapes differ, fewer than 2 texts, or an unknown task.
    """
    if task not in ("embedding", CLASSIFICATION_TASK):
        raise ValueError(f"fidelity: task must be 'embedding' or '{CLASSIFICATION_TASK}', got {task!r}")
    if ref.shape != cand.shape or ref.dim() != 2:
        raise ValueError(f"fidelity: ref and cand must be the same 2-D shape, got {tuple(ref.shape)} / {tuple(cand.shape)}")
    if ref.shape[0] < 2:
        raise ValueError(f"fidelity: need at least 2 texts for nearest-neighbour agreement, got {ref.shape[0]}")
    ref64, cand64 = ref.double(), cand.double()
    cos = torch.nn.functional.cosine_similarity(ref64, cand64, dim=1)
    nn_agree = (nearest_other(ref64) == nearest_other(cand64)).double().mean().item()
    argmax = None
    if task == CLASSIFICATION_TASK:
        argmax = (ref64.argmax(dim=1) == cand64.argmax(dim=1)).double().mean().item()
    return Fidelity(
        cos_mean=cos.mean().item(),
        cos_min=cos.min().item(),
        nn_agreement=nn_agree,
        argmax_agreement=argmax,
        count=int(ref.shape[0]),
    )
