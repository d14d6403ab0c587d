"""Which heads and FFN channels each layer keeps: uniform keep-ratios, or a cost budget allocated across layers.

* **Keep-ratios** — every layer keeps ``round(ratio · n)`` of its heads / channels (at least the minimum, FFN
  counts rounded to ``ffn_multiple``), the highest-scored ones.
* **Budget** — units are removed greedily, lowest ``score / cost`` first, across all layers and both kinds (or
  the kinds ``units`` allows), until the model's cost is at most ``budget ×`` its cost now. FFN channels go in
  chunks of ``ffn_multiple`` (their scores summed). A budget below the cost of the smallest allowed model is
  refused.

Kept indices are returned in ascending order (permute-to-front keeps the surviving units' relative order).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from icd.transforms.compact_cost import UnitCosts
from icd.transforms.compact_importance import UnitScores
from icd.transforms.compact_slice import LayerSize


@dataclass
class Allocation:
    """Kept head and FFN-channel indices per layer (ascending)."""

    heads: list[list[int]]
    ffn: list[list[int]]

    @property
    def sizes(self) -> list[LayerSize]:
        return [LayerSize(len(h), len(f)) for h, f in zip(self.heads, self.ffn)]


def _top(scores: torch.Tensor, keep: int) -> list[int]:
    order = torch.argsort(scores.double(), descending=True, stable=True)
    return sorted(int(i) for i in order[:keep])


def round_count(n: int, ratio: float | None, minimum: int, multiple: int = 1) -> int:
    """``round(ratio · n)`` rounded to a multiple of ``multiple``, at least ``minimum`` (and 1), at most ``n``
    (``ratio`` None: ``n``)."""
    if ratio is None:
        return n
    keep = round(ratio * n)
    if multiple > 1:
        keep = int(round(keep / multiple)) * multiple
    return max(min(keep, n), min(minimum, n), 1)


def ratio_sizes(sizes: Sequence[LayerSize], heads_keep: float | None, ffn_keep: float | None, min_heads: int = 1,
                min_ffn: int = 1, ffn_multiple: int = 1) -> list[LayerSize]:
    """The per-layer counts keep-ratios give."""
    return [LayerSize(round_count(s.heads, heads_keep, min_heads),
                      round_count(s.intermediate, ffn_keep, min_ffn, ffn_multiple)) for s in sizes]


def by_ratio(scores: UnitScores, sizes: Sequence[LayerSize], heads_keep: float | None, ffn_keep: float | None,
             min_heads: int = 1, min_ffn: int = 1, ffn_multiple: int = 1) -> Allocation:
    """Every layer keeps the same fraction of its heads / FFN channels (None = all), highest scores first."""
    counts = ratio_sizes(sizes, heads_keep, ffn_keep, min_heads, min_ffn, ffn_multiple)
    return Allocation([_top(scores.heads[i], c.heads) for i, c in enumerate(counts)],
                      [_top(scores.ffn[i], c.intermediate) for i, c in enumerate(counts)])


def smallest_sizes(sizes: Sequence[LayerSize], units: str, min_heads: int, min_ffn: int) -> list[LayerSize]:
    """The smallest model a budget may reach (per layer: the minimum of each kind that ``units`` may cut)."""
    return [LayerSize(min(s.heads, min_heads) if units in ("both", "heads") else s.heads,
                      min(s.intermediate, min_ffn) if units in ("both", "ffn") else s.intermediate) for s in sizes]


def by_budget(scores: UnitScores, sizes: Sequence[LayerSize], costs: UnitCosts, budget: float, units: str = "both",
              min_heads: int = 1, min_ffn: int = 1, ffn_multiple: int = 1) -> Allocation:
    """Remove the units with the lowest score per unit of cost until the cost is at most ``budget`` of now.

    Raises:
        ValueError: the budget is below the cost of the smallest model the minimums allow.
    """
    total = costs.model(sizes)
    target = budget * total
    floor = costs.model(smallest_sizes(sizes, units, min_heads, min_ffn))
    if target < floor - 1e-9 * max(total, 1.0):
        raise ValueError(
            f"compact.budget={budget}: no allocation reaches it; the smallest model allowed (units={units!r}, "
            f"min_heads={min_heads}, min_ffn={min_ffn}) keeps {floor / total:.3f} of the {costs.unit} cost"
        )
    kept_heads = [set(range(s.heads)) for s in sizes]
    kept_ffn = [set(range(s.intermediate)) for s in sizes]
    # candidate removals per layer and kind, lowest score first: (score / cost, layer, kind, indices)
    queues: list[tuple[float, int, str, int, list[int]]] = []
    order_heads = [torch.argsort(s.double(), stable=True).tolist() for s in scores.heads]
    order_ffn = [torch.argsort(s.double(), stable=True).tolist() for s in scores.ffn]
    position = {("heads", i): 0 for i in range(len(sizes))} | {("ffn", i): 0 for i in range(len(sizes))}

    def next_chunk(kind: str, layer: int) -> list[int] | None:
        order = order_heads[layer] if kind == "heads" else order_ffn[layer]
        kept = kept_heads[layer] if kind == "heads" else kept_ffn[layer]
        minimum = min_heads if kind == "heads" else min_ffn
        start = position[(kind, layer)]
        if kind == "heads":
            step = 1
        else:
            remainder = len(kept) % ffn_multiple
            step = remainder if remainder else ffn_multiple
        chunk = order[start : start + step]
        if not chunk or len(kept) - len(chunk) < min(minimum, len(order)):
            return None
        return chunk

    def push(kind: str, layer: int) -> None:
        chunk = next_chunk(kind, layer)
        if chunk is None:
            return
        table = scores.heads[layer] if kind == "heads" else scores.ffn[layer]
        unit_cost = costs.head if kind == "heads" else costs.channel
        ratio = float(table[chunk].double().sum()) / max(unit_cost * len(chunk), 1e-30)
        heapq.heappush(queues, (ratio, layer, kind, position[(kind, layer)], chunk))

    for layer in range(len(sizes)):
        if units in ("both", "heads"):
            push("heads", layer)
        if units in ("both", "ffn"):
            push("ffn", layer)
    current = total
    while current > target + 1e-9 * max(total, 1.0) and queues:
        _ratio, layer, kind, _pos, chunk = heapq.heappop(queues)
        kept = kept_heads[layer] if kind == "heads" else kept_ffn[layer]
        kept.difference_update(chunk)
        position[(kind, layer)] += len(chunk)
        current -= (costs.head if kind == "heads" else costs.channel) * len(chunk)
        push(kind, layer)
    return Allocation([sorted(h) for h in kept_heads], [sorted(f) for f in kept_ffn])
