"""Exact polish of a repaired allocation: the integer model (matching.mip) re-solved on small neighbourhoods
around the orders the relaxation and the allocation disagree on, everything else fixed.

A seed is a multi-device order whose relaxation flow is fractional or sits on other classes than the
allocation gives it. Seeds that share a class form one cluster; a cluster's neighbourhood is every order
with an edge in its classes that is unfilled or placed on them (their other edges stay usable on the
capacity left over). Each neighbourhood is solved by HiGHS with the current allocation as its first
incumbent and a deterministic node limit, so a step never loses welfare and the same snapshot gives the
same result on any machine. Clusters too large for the column budget are skipped and named in
`stats.limits_hit` ("polish").

Clusters are solved where the relaxation's welfare exceeds the allocation's most first (`class_shortfall`,
per stage): the column budget binds on most markets over 2,000 orders, and in seed order it went to
neighbourhoods that gained nothing while the ones that gained most waited (`nodes` 7,000 x 1,200).

Measured (scale-leases 7k x 1.2k, seed 1): the fast repair leaves 0.214% below the bound; 29 clusters
(1-9 classes, 27-608 orders each) bring it to 0.019%, where the CP-SAT residual it replaces stayed at
0.214% (work limit hit).
"""

from __future__ import annotations

import numpy as np

from matching.eligibility import Prepared
from matching.mip import count_candidates, solve_mip, to_placer, unit_order_mask
from matching.placement import Placer
from matching.relaxation import Network, Relaxation

NODE_LIMIT = 200  # branch-and-bound nodes per neighbourhood (deterministic)
MAX_COLUMNS = 30_000  # a neighbourhood larger than this is skipped (HiGHS' root work grows faster than its size)
TOTAL_COLUMNS = 450_000  # all neighbourhoods of one clearing together, at most (56k markets: specs/matching.md)
MARKET_MULTIPLE = 2  # ... and at most this many times the whole market's columns (a work budget that scales)
FLOW_MARKET_MULTIPLE = 4  # ... on a min-cost-flow market, whose neighbourhoods are cheap (specs/matching.md)
MIN_BUDGET = 60_000  # ... but never less than this (small markets polish fully)
# On a min-cost-flow market the neighbourhoods are cheap (0.03-0.3 CPU s for 2-14k columns on prices 7,000 x
# 1,200), so the flow's clearings allow larger ones and split a merged cluster over the cap into its seeds' own
# class sets instead of skipping it (specs/matching.md, "Polish: split clusters"); the time-indexed LP's
# (windows 7k: 0.0932% -> 0.0455% below the bound, but 36 -> 114 CPU s) keeps the cap and skips.
FLOW_MAX_COLUMNS = 35_000


def seeds(prep: Prepared, rel: Relaxation, placer: Placer) -> list[int]:
    """Multi-device orders where the relaxation and the allocation disagree (fractional, or other classes)."""
    x = np.asarray(rel.x, dtype=np.float64)
    units = unit_order_mask(prep)
    out = []
    for o in np.nonzero(~units)[0].tolist():
        es = prep.order_edges[o]
        if not len(es):
            continue
        xs = x[es]
        fill = float((xs / prep.e_n[es]).sum())
        lp_cls = {int(c) for c in prep.e_class[es[xs > 1e-9]].tolist()}
        now = {int(prep.pool_class[pc.pool]) for pc in placer.order_pieces(o)}
        if abs(fill - float(placer.filled[o])) > 1e-6 or lp_cls != now:
            out.append(o)
    return out


def clusters(
    prep: Prepared, rel: Relaxation, placer: Placer, seed_orders: list[int], *, every_edge: bool = False
) -> list[tuple[set[int], list[set[int]]]]:
    """Class sets of the seeds, merged where they share a class (in seed order: deterministic), each with
    the class sets of its seeds (solved one by one when the merged neighbourhood is over the size cap).

    A seed's classes are those its relaxation flow and its current pieces use, or with every_edge all the
    classes it could use (the wider second stage)."""
    x = np.asarray(rel.x, dtype=np.float64)
    out: list[tuple[set[int], list[set[int]]]] = []
    for o in seed_orders:
        es = prep.order_edges[o]
        if every_edge:
            cs = {int(c) for c in prep.e_class[es].tolist()}
        else:
            cs = {int(c) for c in prep.e_class[es[x[es] > 1e-9]].tolist()}
            cs |= {int(prep.pool_class[pc.pool]) for pc in placer.order_pieces(o)}
        if not cs:
            continue
        merged = set(cs)
        parts = [cs]
        keep = []
        for c, ps in out:
            if c & merged:
                merged |= c
                parts = ps + parts
            else:
                keep.append((c, ps))
        keep.append((merged, parts))
        out = keep
    return out


def class_shortfall(prep: Prepared, net: Network, rel: Relaxation, cur: Placer) -> np.ndarray:
    """Per class, the relaxation's welfare there minus the allocation's (cost units): where a neighbourhood
    can gain. Order edges count in their class, pool edges and pieces in their pool's class."""
    C = len(prep.classes)
    lp = np.zeros(C)
    act = np.nonzero(net.e_group >= 0)[0]
    if len(act):
        np.add.at(lp, prep.e_class[act], np.asarray(rel.x, dtype=np.float64)[act] * net.e_weight[act])
    if len(net.f_pool):
        np.add.at(lp, prep.pool_class[net.f_pool], -np.asarray(rel.y, dtype=np.float64) * net.f_cost)
    now = np.zeros(C)
    for pc in cur.pieces:
        now[int(prep.pool_class[pc.pool])] += (pc.limit - int(prep.pool_ask[pc.pool])) * pc.devices * pc.lease
    return lp - now * prep.slot_seconds


def _neighbourhood(prep: Prepared, cur: Placer, classes: set[int]) -> np.ndarray:
    """Orders with an edge in the classes that are unfilled or have a piece there (mask)."""
    inc = np.zeros(len(prep.classes), dtype=bool)
    inc[sorted(classes)] = True
    touch = np.zeros(prep.n_orders, dtype=bool)
    touch[prep.e_order[inc[prep.e_class]]] = True
    po, pp = cur.live_arrays()
    om = np.ones(prep.n_orders, dtype=bool)
    om[po] = False  # orders with pieces: only where a piece is in the classes
    om[po[inc[prep.pool_class[pp]]]] = True
    return om & touch


def polish(
    prep: Prepared,
    net: Network,
    rel: Relaxation,
    placer: Placer,
    *,
    node_limit: int = NODE_LIMIT,
    gap_tolerance: float = 1e-6,
    bound: float | None = None,
    split: bool = False,
    max_columns: int = MAX_COLUMNS,
    multiple: int = MARKET_MULTIPLE,
) -> Placer:
    """Improve an allocation neighbourhood by neighbourhood with the exact model; never worse than given.

    Stage 1: each cluster's classes (where the split gangs' flow and pieces are). Stage 2, when still not
    within tolerance of the bound: each cluster of every class the seeds could use. bound: the stopping
    bound (default the relaxation's; a proven integer bound stops sooner). split: a cluster whose
    neighbourhood is over max_columns is solved seed by seed (each seed's own classes) instead of skipped."""
    cur = placer
    stop = rel.value if bound is None else bound
    whole = count_candidates(prep, np.ones(prep.n_orders, dtype=bool))
    budget = [min(TOTAL_COLUMNS, max(MIN_BUDGET, multiple * whole))]
    for every_edge in (False, True):
        found = clusters(prep, rel, cur, seeds(prep, rel, cur), every_edge=every_edge)
        # where the relaxation's welfare exceeds the allocation's most, first: the budget binds
        short = class_shortfall(prep, net, rel, cur)
        rank = [-float(short[sorted(cs)].sum()) for cs, _ in found]
        found = [found[i] for i in sorted(range(len(found)), key=lambda i: (rank[i], i))]
        for cs, parts in found:
            if cur.welfare_units() >= stop * (1.0 - gap_tolerance):
                return cur
            if not split or len(parts) == 1 or count_candidates(prep, _neighbourhood(prep, cur, cs)) <= max_columns:
                cur = _solve_neighbourhood(prep, net, cur, cs, node_limit, budget, max_columns)
                continue
            done: list[set[int]] = []
            for part in parts:  # over the cap merged: each seed's own classes
                if any(part <= d for d in done):
                    continue
                if cur.welfare_units() >= stop * (1.0 - gap_tolerance):
                    return cur
                cur = _solve_neighbourhood(prep, net, cur, part, node_limit, budget, max_columns)
                done.append(part)
    return cur


def _solve_neighbourhood(
    prep: Prepared,
    net: Network,
    cur: Placer,
    cs: set[int],
    node_limit: int,
    budget: list[int],
    max_columns: int = MAX_COLUMNS,
) -> Placer:
    """The integer model on one neighbourhood, everything else fixed; the better of it and `cur`."""
    om = _neighbourhood(prep, cur, cs)
    cols = count_candidates(prep, om)
    if cols > max_columns or cols > budget[0]:
        prep.limits_hit.append("polish")
        return cur
    budget[0] -= cols
    base = cur.copy()
    for o in np.nonzero(om & base.filled)[0].tolist():
        base.remove(o)
    node_free = {p: prep.pool_node_sizes[p][:, None] - u for p, u in base.node_used.items()}
    res = solve_mip(prep, net, orders=om, free=base.free, node_free=node_free, node_limit=node_limit, hint=cur)
    if res is None or res.status == "failed":
        return cur
    if res.status == "limit":
        prep.limits_hit.append("polish")
    alt = to_placer(prep, net, res, base)
    return alt if alt.welfare_units() > cur.welfare_units() else cur
