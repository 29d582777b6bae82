"""Whole-market integer steps for markets whose LP bound is loose (multi-pool gangs): the integer model with
every multi-device order free and each single-device order kept to a few edges, and the root bound of the
full integer model, which is the bound the clearing reports when it is tighter than the LP's.

Why: on `gang` 2,000 x 350 (seed 1) the flow's bound is 3.7% above the integer optimum (it serves fractions of
64-device gangs and ignores their site and pool-count rules), so the neighbourhood polish, which stops only
near that bound, spent 14 CPU s to end 0.44% below the optimum. The restricted model (all gangs; single-device
orders on their relaxation support, their current edge and their two best-paying edges: 10k of 26k columns)
reaches 0.11% below the optimum in 7.5 CPU s, and the full model's root with cuts and no primal heuristics
proves a bound 0.015% above it in 6.2 CPU s (load 6). Work is bounded by model size (columns), never time.
"""

from __future__ import annotations

import numpy as np

from matching.eligibility import Prepared
from matching.mip import count_candidates, solve_mip, to_placer, unit_order_mask
from matching.placement import Placer
from matching.relaxation import Network, Relaxation

UNIT_TOP_EDGES = 2  # best-paying edges kept per single-device order (2: 0.11% below the optimum, 4: 0.05% at 2x work)
NODE_LIMIT = 50  # branch-and-bound nodes of the restricted model (deterministic)
MAX_COLUMNS = 25_000  # a restricted model larger than this is skipped and named "restricted" in limits_hit
BOUND_MAX_COLUMNS = 60_000  # the full model's root bound is computed only up to this size ("bound" otherwise)
LOOSE_GAP = 0.005  # an allocation this far below the LP bound: the bound may be loose, try the integer steps
RESTRICTED_GAP = 0.002  # ... this far below it: the restricted model runs (when within its size cap)


def unit_edge_mask(
    prep: Prepared, net: Network, rel: Relaxation, placer: Placer, top: int = UNIT_TOP_EDGES
) -> np.ndarray:
    """Edges kept for single-device orders: the relaxation's support, the allocation's and each order's
    `top` best-paying edges (multi-device orders' edges are not restricted by this mask)."""
    keep = np.asarray(rel.x, dtype=np.float64) > 1e-9
    for pc in placer.pieces:
        keep[pc.edge] = True
    w = np.asarray(net.e_weight, dtype=np.float64)
    for o in np.nonzero(unit_order_mask(prep))[0].tolist():
        es = prep.order_edges[o]
        if len(es) > top:
            keep[es[np.argsort(-w[es], kind="stable")[:top]]] = True
        else:
            keep[es] = True
    return keep


def restricted_columns(prep: Prepared, mask: np.ndarray) -> int:
    """Columns of the restricted model: gang candidates in full plus the kept single-device edges."""
    units = unit_order_mask(prep)
    everyone = np.ones(prep.n_orders, dtype=bool)
    unit_e = units[prep.e_order]
    return count_candidates(prep, everyone) - int((unit_e & ~mask).sum())


def restricted_mip(prep: Prepared, net: Network, rel: Relaxation, placer: Placer) -> Placer:
    """The better of the allocation and the restricted integer model's best solution (warm-started from it)."""
    mask = unit_edge_mask(prep, net, rel, placer)
    if restricted_columns(prep, mask) > MAX_COLUMNS:  # without the best-paying edges (LP support + current)
        mask = unit_edge_mask(prep, net, rel, placer, top=0)
        if restricted_columns(prep, mask) > MAX_COLUMNS:
            prep.limits_hit.append("restricted")
            return placer
    res = solve_mip(prep, net, node_limit=NODE_LIMIT, hint=placer, unit_edges=mask)
    if res is None or res.status == "failed":
        return placer
    if res.status == "limit":
        prep.limits_hit.append("restricted")
    alt = to_placer(prep, net, res)
    return alt if alt.welfare_units() > placer.welfare_units() else placer


def root_bound(prep: Prepared, net: Network, rel: Relaxation, placer: Placer) -> tuple[float, Placer]:
    """The full integer model's root bound (cuts, no heuristics) in cost units, capped by the LP bound, and
    the better allocation; the LP bound when the model is too large (named "bound" in limits_hit)."""
    if count_candidates(prep, np.ones(prep.n_orders, dtype=bool)) > BOUND_MAX_COLUMNS:
        prep.limits_hit.append("bound")
        return rel.value, placer
    res = solve_mip(prep, net, hint=placer, bound_only=True)
    if res is None or res.status == "failed" or not np.isfinite(res.bound):
        return rel.value, placer
    alt = to_placer(prep, net, res)
    best = alt if alt.welfare_units() > placer.welfare_units() else placer
    return min(rel.value, res.bound), best
