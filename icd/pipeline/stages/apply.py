"""Stage 4, apply: fold the permutations into the weights (no runtime permutation, see Encoder.set_output_index)."""

from __future__ import annotations

import numpy as np
import torch

from icd.model.encoder import Encoder
from icd.model.layout import HIDDEN
from icd.transforms.permute import apply_permutations_, inverse_permutation


def fold_(encoder: Encoder, perms: dict[str, np.ndarray], total_hidden: np.ndarray | None) -> None:
    """Apply ``perms`` in place; ``total_hidden`` is the hidden permutation of the model relative to the original
    (all applications composed), used to keep an embedding model's output in the original basis."""
    apply_permutations_(encoder, perms)
    if encoder.task == "embedding" and total_hidden is not None and HIDDEN in perms:
        identity = np.array_equal(total_hidden, np.arange(total_hidden.size))
        encoder.set_output_index(None if identity else torch.as_tensor(inverse_permutation(total_hidden)))
