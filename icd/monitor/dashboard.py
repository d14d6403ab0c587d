"""The Grafana dashboard ``triton_overview.json``: its PromQL expressions and which of them need a GPU.

Grafana cannot run here, so the dashboard is checked by evaluating every expression it holds against a live
Prometheus (tests/monitor/test_e2e_stack.py). Series that only exist on a GPU host (Triton's ``nv_gpu_*``,
collected through DCGM) return nothing on a CPU-only host; :attr:`DashboardExpr.needs_gpu` says which.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from icd.errors import ArtefactError
from icd.monitor.rules import RuleSet

GPU_ONLY_METRICS = (
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
)
"""Triton series that exist only with GPU metrics (DCGM) — empty on CPU-only hosts."""

ICD_BACKEND_METRICS = (
    "triton_icd_permutation_time_seconds",
    "triton_icd_correlation_cache_hits",
    "triton_icd_correlation_total",
    "triton_icd_layout_efficiency",
)
"""Custom metrics of icd's python backend — present only while an icd-exported model is served."""

SHADOW_METRIC_PREFIX = "icd_shadow_"
"""Series of the shadow comparator (``icd router mirror``) — present only while a candidate is shadowed."""


class ExprKind(str, Enum):
    """Where in the dashboard an expression lives."""

    PANEL = "panel"
    """A panel target: must return data under load."""
    ANNOTATION = "annotation"
    """An annotation query (firing ICD alerts): returns data only while an alert fires."""


@dataclass(frozen=True)
class DashboardExpr:
    """One PromQL expression of the dashboard."""

    title: str
    ref: str
    expr: str
    kind: ExprKind
    metrics: frozenset[str]

    @property
    def needs_gpu(self) -> bool:
        return bool(self.metrics & set(GPU_ONLY_METRICS))

    @property
    def needs_icd_backend(self) -> bool:
        return bool(self.metrics & set(ICD_BACKEND_METRICS))

    @property
    def needs_shadow(self) -> bool:
        return any(m.startswith(SHADOW_METRIC_PREFIX) for m in self.metrics)


def _metrics_of(expr: str, rules: RuleSet) -> frozenset[str]:
    expanded = rules.expand(expr)
    names = set(re.findall(r"\b(nv_[a-z_]+|triton_icd_[a-z_]+|icd_shadow_[a-z_]+)\b", expanded))
    return frozenset(names)


def load_dashboard(path: Path) -> dict:
    """Read a Grafana dashboard JSON file.

    Raises:
        ArtefactError: the file is missing, not JSON, or has no panels.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"cannot read dashboard {path}: {exc}") from exc
    if not isinstance(doc.get("panels"), list):
        raise ArtefactError(f"{path}: not a Grafana dashboard (no 'panels' list)")
    return doc


def dashboard_exprs(doc: dict, rules: RuleSet) -> list[DashboardExpr]:
    """Every PromQL expression of the dashboard: panel targets (rows included) and annotation queries."""
    found: list[DashboardExpr] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(DashboardExpr(panel.get("title", ""), target.get("refId", ""), target["expr"],
                                               ExprKind.PANEL, _metrics_of(target["expr"], rules)))

    walk(doc["panels"])
    for annotation in doc.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append(DashboardExpr(annotation.get("name", ""), "annotation", annotation["expr"],
                                       ExprKind.ANNOTATION, _metrics_of(annotation["expr"], rules)))
    return found
