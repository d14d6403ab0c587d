"""Community ordering: Louvain communities, the communities ordered spectrally, each one ordered spectrally.

Louvain (networkx) groups channels that co-activate; the communities are then laid out in the spectral order of
the community graph (aggregated weights between communities), and channels inside each community in the
spectral order of its own subgraph. Deterministic for a seed.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

from icd.solver.spectral import spectral_order


def louvain_communities(sym: sp.csr_matrix, seed: int = 0) -> list[np.ndarray]:
    """Louvain communities of the weighted graph ``sym`` (sorted channel indices each, by lowest index)."""
    graph = nx.from_scipy_sparse_array(sym, edge_attribute="weight")
    found = nx.algorithms.community.louvain_communities(graph, weight="weight", seed=seed)
    groups = [np.array(sorted(c), dtype=np.int64) for c in found]
    groups.sort(key=lambda idx: int(idx[0]))
    return groups


def community_order(sym: sp.csr_matrix, seed: int = 0) -> np.ndarray:
    """Ordering ``perm`` (``perm[new] = old``): communities in spectral order, each ordered spectrally."""
    groups = louvain_communities(sym, seed)
    size = sym.shape[0]
    labels = np.empty(size, dtype=np.int64)
    for k, idx in enumerate(groups):
        labels[idx] = k
    assign = sp.csr_matrix((np.ones(size), (np.arange(size), labels)), shape=(size, len(groups)))
    quotient = (assign.T @ sym @ assign).tocsr()
    quotient.setdiag(0.0)
    quotient.eliminate_zeros()
    community_rank = spectral_order(quotient, seed)
    parts = []
    for k in community_rank:
        idx = groups[int(k)]
        parts.append(idx[spectral_order(sym[idx][:, idx].tocsr(), seed)])
    return np.concatenate(parts).astype(np.int64)
