"""Connected components of the order-class graph: independent sub-markets (residency-bound regions)."""

from __future__ import annotations

import numpy as np

from matching.eligibility import Prepared


def component_labels(prep: Prepared) -> np.ndarray:
    """Component label per class (classes joined by an order that may use both); -1 for unused classes."""
    C = len(prep.classes)
    parent = list(range(C))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    used = np.zeros(C, dtype=bool)
    if len(prep.e_class):
        used[prep.e_class] = True
        eo = prep.e_order
        ec = prep.e_class
        # consecutive edges of the same order (edges are grouped by order) join their classes
        same = np.nonzero(eo[1:] == eo[:-1])[0]
        for i in same.tolist():
            a, b = find(int(ec[i])), find(int(ec[i + 1]))
            if a != b:
                parent[max(a, b)] = min(a, b)
    labels = np.array([find(c) if used[c] else -1 for c in range(C)], dtype=np.int64)
    return labels


def count_components(prep: Prepared) -> int:
    """Number of connected components that hold at least one order edge."""
    lab = component_labels(prep)
    return len(set(lab[lab >= 0].tolist()))
