"""Weight arithmetic for traffic splits, in small pure functions (percentages, summing to 100).

Example:
    parse_split("50:50")                      # (50.0, 50.0)
    canary_weights("bert_baseline", "bert_icd", 10)   # {"bert_baseline": 90.0, "bert_icd": 10.0}
    next_canary_weight(10, step=10, max_weight=50)    # 20
"""

from __future__ import annotations

import math

from icd.errors import UserError

TOTAL = 100.0


def parse_split(text: str) -> tuple[float, float]:
    """Parse ``"A:B"`` (e.g. ``"50:50"``, ``"90:10"``) into two percentages summing to 100."""
    parts = text.split(":")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--traffic-split: expected two numbers like 50:50, got {text!r}") from None
    if a < 0 or b < 0 or a + b <= 0 or not math.isfinite(a + b):
        raise UserError(f"--traffic-split: weights must be non-negative and not both zero, got {text!r}")
    total = a + b
    return TOTAL * a / total, TOTAL * b / total


def canary_weights(primary: str, canary: str, canary_weight: float) -> dict[str, float]:
    """Route ``canary_weight`` % to ``canary`` and the rest to ``primary``."""
    if not 0 <= canary_weight <= TOTAL:
        raise ValueError(f"canary_weight must be within [0, 100], got {canary_weight}")
    return {primary: TOTAL - canary_weight, canary: float(canary_weight)}


def next_canary_weight(current: float, step: float, max_weight: float) -> float:
    """The canary weight after one successful analysis step, capped at ``max_weight``."""
    if step <= 0:
        raise ValueError(f"stepWeight must be > 0, got {step}")
    return min(current + step, max_weight)


def normalise(weights: dict[str, float]) -> dict[str, float]:
    """Scale non-negative weights to percentages summing to 100 (two decimals, remainder on the largest)."""
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights.values())
    pct = {k: round(TOTAL * w / total, 2) for k, w in weights.items()}
    largest = max(pct, key=lambda k: pct[k])
    pct[largest] = round(pct[largest] + TOTAL - sum(pct.values()), 2)
    return pct
