"""Exact CP-SAT model on a small residual (or a tiny market): order x pool pieces for a chosen set of
orders and classes, with every placement rule, warm-started from the repaired allocation (a complete hint)
and a time limit. Used after gang repair where the relaxation and the integral allocation differ.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from matching.eligibility import Prepared

if TYPE_CHECKING:
    from ortools.sat.python import cp_model  # imported when a model is built: it pulls in pandas

from matching.placement import Piece


def count_vars(prep: Prepared, orders: list[int], classes: set[int]) -> int:
    """Number of (order, edge, pool) candidates the exact model would hold."""
    if not orders or not len(prep.e_order):
        return 0
    sizes = np.array([len(cp) for cp in prep.class_pools], dtype=np.int64)
    in_c = np.zeros(len(sizes), dtype=bool)
    in_c[list(classes)] = True
    in_o = np.zeros(prep.n_orders, dtype=bool)
    in_o[orders] = True
    keep = in_o[prep.e_order] & in_c[prep.e_class]
    return int(sizes[prep.e_class[keep]].sum())


def solve_exact(
    prep: Prepared,
    orders: list[int],
    classes: set[int],
    free: np.ndarray,
    hint: list[Piece],
    *,
    time_limit: float = 2.0,
    seed: int = 0,
) -> tuple[list[Piece], bool] | None:
    """Best pieces for `orders` on the pools of `classes` given `free` capacity; (pieces, proven optimal).

    Returns None when the solver found nothing at least as good as the hint.
    """
    from ortools.sat.python import cp_model

    mk = prep.market
    model = cp_model.CpModel()
    slot = prep.slot_seconds
    cand: list[tuple[int, int, int, cp_model.IntVar, cp_model.IntVar]] = []  # (o, e, p, z, d)
    by_order: dict[int, list[int]] = defaultdict(list)
    usage: dict[tuple[int, int], list[cp_model.IntVar]] = defaultdict(list)
    obj = []
    node_usage: dict[tuple[int, int, int], list[cp_model.IntVar]] = defaultdict(list)
    node_of: dict[int, list[tuple[int, cp_model.IntVar]]] = {}  # candidate -> [(node, y)]
    hint_node = {(pc.order, pc.edge, pc.pool): pc.node for pc in hint}
    hint_map = {(pc.order, pc.edge, pc.pool): pc.devices for pc in hint}
    for o in orders:
        order = mk.orders[o]
        L = int(prep.order_lease[o])
        scopes: dict[tuple[int, ...], cp_model.IntVar] = {}
        fill_terms: dict[tuple[int, ...], list[cp_model.IntVar]] = defaultdict(list)
        z_terms: dict[tuple[int, ...], list[cp_model.IntVar]] = defaultdict(list)
        scope_n: dict[tuple[int, ...], tuple[int, int]] = {}
        hinted: set[tuple[int, ...]] = set()
        for e in prep.order_edges[o]:
            e = int(e)
            c = int(prep.e_class[e])
            if c not in classes:
                continue
            k = int(prep.e_start[e])
            n = int(prep.e_n[e])
            need = int(prep.e_need[e])
            lim = int(prep.e_limit[e])
            for p in prep.class_pools[c]:
                p = int(p)
                if prep.pool_ask[p] > lim or order.billing_mode not in prep.pool_billing[p]:
                    continue
                if prep.pool_min_lease_slots[p] > L:
                    continue
                avail = int(free[p, k : k + L].min())
                if avail <= 0 or (order.max_pools == 1 and avail < need):
                    continue
                scope: tuple[int, ...] = (k,)
                if order.same_model or order.quantity_scu is not None:
                    scope += (int(prep.pool_model[p]),)
                if order.colocation == "site":
                    scope += (int(prep.pool_site[p]),)
                elif order.colocation == "region":
                    scope += (int(prep.pool_region[p]),)
                z = model.new_bool_var("")
                d = model.new_int_var(0, min(n, avail), "")
                model.add(d <= min(n, avail) * z)
                model.add(d >= z)
                h = hint_map.get((o, e, p), 0)
                model.add_hint(z, 1 if h else 0)
                model.add_hint(d, h)
                if scope not in scopes:
                    scopes[scope] = model.new_bool_var("")
                    scope_n[scope] = (n, need)
                model.add_implication(z, scopes[scope])
                fill_terms[scope].append(d)
                z_terms[scope].append(z)
                cand.append((o, e, p, z, d))
                by_order[o].append(len(cand) - 1)
                if prep.order_node[o] and min(n, avail) > 1:
                    # a single-node gang: on exactly one node of the pool, within that node's devices
                    ys = []
                    parts = []
                    for j, size in enumerate(prep.pool_node_sizes[p].tolist()):
                        if size <= 0:
                            continue
                        y = model.new_bool_var("")
                        dj = model.new_int_var(0, min(size, n), "")
                        model.add(dj <= min(size, n) * y)
                        model.add_hint(y, 1 if h and hint_node.get((o, e, p)) == j else 0)
                        ys.append((j, y))
                        parts.append(dj)
                        for t in range(k, k + L):
                            node_usage[(p, j, t)].append(dj)
                    model.add(sum(y for _, y in ys) == z)
                    model.add(sum(parts) == d)
                    node_of[len(cand) - 1] = ys
                if h:
                    hinted.add(scope)
                for t in range(k, k + L):
                    usage[(p, t)].append(d)
                obj.append((lim - int(prep.pool_ask[p])) * L * slot * d)
        if not scopes:
            continue
        model.add_at_most_one(scopes.values())
        for sc, s in scopes.items():
            n, need = scope_n[sc]
            model.add_hint(s, 1 if sc in hinted else 0)
            total = sum(fill_terms[sc])
            model.add(sum(z_terms[sc]) <= order.max_pools * s)
            model.add(total <= n * s)
            model.add(total >= need * s)
    for (p, t), ds in usage.items():
        model.add(sum(ds) <= int(free[p, t]))
    for (p, j, _t), ds in node_usage.items():
        model.add(sum(ds) <= int(prep.pool_node_sizes[p][j]))
    model.maximize(sum(obj))
    solver = cp_model.CpSolver()
    # single worker and a deterministic work limit (no wall clock): the same snapshot gives the same
    # allocation on any machine
    solver.parameters.max_deterministic_time = time_limit
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    status = solver.solve(model)
    if status in (cp_model.FEASIBLE, cp_model.UNKNOWN):
        prep.limits_hit.append("exact")
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    out: list[Piece] = []
    for i, (o, e, p, _z, d) in enumerate(cand):
        v = int(solver.value(d))
        if v > 0:
            node = next((j for j, y in node_of.get(i, []) if solver.value(y)), -1)
            out.append(Piece(o, p, v, int(prep.e_start[e]), int(prep.order_lease[o]), int(prep.e_limit[e]), e, node))
    return out, status == cp_model.OPTIMAL
