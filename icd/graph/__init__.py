"""Correlation graphs per permutable dimension, built from calibration statistics (docs/graph.md)."""

from __future__ import annotations

from icd.graph.affinity import dim_affinity, head_affinity
from icd.graph.build import build_graph, build_graphs
from icd.graph.sparsify import graph_from_arrays, graph_to_arrays, top_k_graph

__all__ = [
    "build_graph",
    "build_graphs",
    "dim_affinity",
    "graph_from_arrays",
    "graph_to_arrays",
    "head_affinity",
    "top_k_graph",
]
