"""Stage 4, apply: fold the permutations into the weights.

``apply_permutations_`` keeps an embedding model's output in the original basis itself (the one runtime gather
of ``Encoder.set_output_index``); classifier logits need nothing.
"""

from __future__ import annotations

import numpy as np

from icd.model.encoder import Encoder
from icd.transforms.permute import apply_permutations_


def fold_(encoder: Encoder, perms: dict[str, np.ndarray]) -> None:
    """Apply ``perms`` (relative to the model as it is now) in place."""
    apply_permutations_(encoder, perms)
