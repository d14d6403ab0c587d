"""Stage 8, accept / roll back (iterative mode), on measured numbers. The rule (docs/pipeline.md):

accept the re-permuted candidate when **all** hold —
1. its held-out mean cosine is not below the current model's by more than ``COS_TOLERANCE`` (float rounding);
2. it does not fall below ``pipeline.accept.min_cos_mean`` when the current model is above it (a current model
   already below the floor may only be replaced by one at least as faithful);
3. its relative objective gain ``(before − after) / before`` ≥ ``pipeline.accept.min_gain`` (> 0 when that is 0).
Otherwise roll back: the current permutations and weights stay active, and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from icd.config.schema import AcceptSection
from icd.pipeline.stages.measure import VariantMetrics

COS_TOLERANCE = 1e-5


@dataclass
class Decision:
    accepted: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def decide(current: VariantMetrics, candidate: VariantMetrics, rule: AcceptSection, cost_before: float,
           cost_after: float) -> Decision:
    gain = 0.0 if cost_before <= 0 else (cost_before - cost_after) / cost_before
    evidence = {"cos_mean_current": current.fidelity.cos_mean, "cos_mean_candidate": candidate.fidelity.cos_mean,
                "min_cos_mean": rule.min_cos_mean, "objective_before": cost_before, "objective_after": cost_after,
                "gain": gain, "min_gain": rule.min_gain}
    cand, cur = candidate.fidelity.cos_mean, current.fidelity.cos_mean
    if cand < cur - COS_TOLERANCE:
        return Decision(False, f"fidelity dropped against the current model ({cand:.5f} < {cur:.5f})", evidence)
    if cand < rule.min_cos_mean <= cur:
        return Decision(False, f"cos_mean {cand:.5f} below the floor {rule.min_cos_mean}", evidence)
    if gain < rule.min_gain or (rule.min_gain == 0.0 and gain <= 0.0):
        return Decision(False, f"objective gain {gain:.4%} not above the required {rule.min_gain:.4%}", evidence)
    return Decision(True, f"fidelity kept, objective gain {gain:.4%}", evidence)
