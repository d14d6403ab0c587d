"""What the router is told, per strategy and phase: one pure function for every strategy of the rollout loop.

The scheduler (:mod:`icd.rollout.scheduler`) is the same for every strategy; only :func:`routes_for` differs —
Flagger's ``runCanary`` / ``runAB`` / ``runBlueGreen`` / mirror steps, reduced to their routing:

=============  ===========================  ======================================  =========================
strategy       before / rolled back         while analysed                          promoted
=============  ===========================  ======================================  =========================
canary         primary 100 %                primary 100 − w, canary w (+ mirror)    canary 100 %
ab             primary 100 %                primary 100 %, match rules → canary     canary 100 %
mirror         primary 100 %                primary 100 %, mirror share → canary    canary 100 %
bluegreen      colour = primary             colour = canary                         colour = canary
=============  ===========================  ======================================  =========================

A canary with ``mirror_share > 0`` also mirrors that share of the primary's requests to the canary, so its analysis
can gate on output agreement (the ``output_agreement`` check) while it takes its weighted share of traffic.

Example:
    routes_for(spec, status)     # Routes(weights={"bert_baseline": 80.0, "bert_icd": 20.0})
"""

from __future__ import annotations

from icd.rollout.canary_spec import CanarySpec, Strategy
from icd.rollout.phase import RolloutPhase
from icd.rollout.router_config import MatchRule
from icd.rollout.router_nginx import Routes
from icd.rollout.status_store import CanaryStatus
from icd.rollout.weights import canary_weights

ROUTED_PHASES = (RolloutPhase.PROGRESSING, RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)


def match_rules(spec: CanarySpec) -> tuple[MatchRule, ...]:
    """The spec's A/B rules as router rules sending matching requests to the canary."""
    return tuple(MatchRule(spec.canary, m.header, m.cookie, m.value, m.regex) for m in spec.match)


def routes_for(spec: CanarySpec, status: CanaryStatus) -> Routes:
    """The routing a status implies for the spec's strategy."""
    phase = status.phase
    if spec.strategy is Strategy.BLUEGREEN:
        return Routes(active=spec.canary if phase in ROUTED_PHASES else spec.primary)
    if phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED):
        return Routes(canary_weights(spec.primary, spec.canary, 100.0))
    if phase is not RolloutPhase.PROGRESSING:
        return Routes(canary_weights(spec.primary, spec.canary, 0.0))
    if spec.strategy is Strategy.CANARY:
        mirror = (spec.canary, spec.mirror_share) if spec.mirror_share > 0 else None
        return Routes(canary_weights(spec.primary, spec.canary, status.canary_weight), mirror=mirror)
    if spec.strategy is Strategy.AB:
        return Routes(canary_weights(spec.primary, spec.canary, 0.0), match=match_rules(spec))
    return Routes(canary_weights(spec.primary, spec.canary, 0.0), mirror=(spec.canary, spec.mirror_share))


def first_weight(spec: CanarySpec) -> float:
    """``canary_weight`` reported once progressing: the first step (canary), 100 (bluegreen), else 0."""
    if spec.strategy is Strategy.CANARY:
        return min(spec.step_weight, spec.max_weight)
    return 100.0 if spec.strategy is Strategy.BLUEGREEN else 0.0
