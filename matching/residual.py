"""Exact re-optimisation of the small residual the gang repair leaves: the gangs the relaxation split, every
gang and single-device order sitting in the classes those gangs could use, and the pools of those classes.

Single-device orders are aggregated per (class, lease, start): an integer count per pool plus one boolean per
order (the highest limits are served first), so the model stays small. CP-SAT gets the repaired allocation as
a complete hint, one worker and a deterministic time budget; the single-device orders of the whole market
are then re-solved exactly by a min-cost flow around the gangs it fixes.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from matching.eligibility import Prepared

if TYPE_CHECKING:
    from ortools.sat.python import cp_model  # imported when a model is built: it pulls in pandas

from matching.placement import Piece, Placer


def residual_classes(prep: Prepared, rel_x: np.ndarray, split: list[int], placer: Placer) -> set[int]:
    """Classes the split gangs touch: where the relaxation sent their flow and where they sit now."""
    out: set[int] = set()
    for o in split:
        es = prep.order_edges[o]
        out.update(int(c) for c in prep.e_class[es[rel_x[es] > 0]].tolist())
        for pc in placer.order_pieces(o):
            out.add(int(prep.pool_class[pc.pool]))
    return out


def solve_residual(
    prep: Prepared,
    placer: Placer,
    units: np.ndarray,
    classes: set[int],
    *,
    time_limit: float = 1.0,
    seed: int = 0,
    max_vars: int = 20000,
    entrant_cap: int = 16,
    backend: str = "cp-sat",
) -> dict[int, Piece | None] | None:
    """Best placement of the single-pool gangs in `classes` given everything else fixed.

    Returns {gang order: its piece, or None for unfilled} for every gang in the residual, or None when the
    model is too large or the solver found nothing at least as good as the hint.
    """
    mk = prep.market
    if prep.order_node.any():
        return None  # node packing is not in this model: keep the heuristic on markets with single-node gangs
    slot = 1  # objective in fen x device-slots (the common slot_seconds factor dropped)
    pools = np.concatenate([prep.class_pools[c] for c in sorted(classes)]) if classes else np.zeros(0, int)
    if not len(pools):
        return None
    in_r = np.zeros(len(mk.pools), dtype=bool)
    in_r[pools] = True
    # who sits on the residual pools now
    gangs: set[int] = set()
    singles: list[Piece] = []
    outside: list[Piece] = []
    for p in pools.tolist():
        for _i, pc in placer.pool_pieces(p):
            if units[pc.order]:
                singles.append(pc)
            elif mk.orders[pc.order].max_pools == 1:
                gangs.add(pc.order)
            else:
                outside.append(pc)
    # unfilled single-pool gangs with an edge into the residual classes
    for o in np.nonzero(~units & ~placer.filled)[0].tolist():
        es = prep.order_edges[o]
        if len(es) and mk.orders[o].max_pools == 1 and any(int(c) in classes for c in prep.e_class[es]):
            gangs.add(o)
    cap = prep.free[pools].copy()
    pos = {int(p): i for i, p in enumerate(pools.tolist())}
    for pc in outside:
        cap[pos[pc.pool], pc.k : pc.k + pc.lease] -= pc.devices
    model = _Model()
    obj: list = []
    usage: dict[tuple[int, int], list] = defaultdict(list)
    hint_piece = {o: placer.order_pieces(o) for o in gangs}
    gvars: dict[int, list[tuple[cp_model.IntVar, Piece]]] = {}
    class_swing: dict[int, int] = {}
    n_vars = 0
    for o in sorted(gangs):
        order = mk.orders[o]
        L = int(prep.order_lease[o])
        cur = hint_piece[o][0] if hint_piece[o] else None
        opts: list[tuple[cp_model.IntVar, Piece]] = []
        for e in prep.order_edges[o].tolist():
            c = int(prep.e_class[e])
            if c not in classes:
                continue
            k = int(prep.e_start[e])
            n = int(prep.e_n[e])
            lim = int(prep.e_limit[e])
            for p in prep.class_pools[c].tolist():
                if prep.pool_ask[p] > lim or order.billing_mode not in prep.pool_billing[p]:
                    continue
                if prep.pool_min_lease_slots[p] > L or int(cap[pos[p], k : k + L].min()) < n:
                    continue
                z = model.new_bool_var("")
                pc = Piece(o, p, n, k, L, lim, e)
                opts.append((z, pc))
                model.add_hint(z, cur is not None and cur.pool == p and cur.edge == e)
                obj.append((lim - int(prep.pool_ask[p])) * n * L * slot * z)
                for t in range(k, k + L):
                    usage[(p, t)].append(n * z)
        if cur is not None and not any(pc.pool == cur.pool and pc.edge == cur.edge for _, pc in opts):
            return None  # the current placement lies outside the model: keep the heuristic
        if opts:
            model.add_at_most_one(z for z, _ in opts)
            gvars[o] = opts
            for c in {int(prep.pool_class[pc.pool]) for _, pc in opts}:
                class_swing[c] = class_swing.get(c, 0) + max(pc.devices for _, pc in opts)
        if cur is not None:
            c = int(prep.pool_class[cur.pool])
            class_swing[c] = class_swing.get(c, 0) + cur.devices
            n_vars += len(opts)
    # single-device orders on residual pools, aggregated per (class, lease, start); the best unserved ones
    # with an edge there may come in, and a served one may leave for free capacity outside the residual
    now_on: dict[tuple[int, int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    exit_memo: dict[tuple[int, int, int], int] = {}

    def exit_value(o: int, k: int, L: int) -> int:
        best = 0
        for e in prep.order_edges[o].tolist():
            c = int(prep.e_class[e])
            if c in classes or int(prep.e_start[e]) != k:
                continue
            key = (c, k, L)
            ask = exit_memo.get(key)
            if ask is None:
                cp = prep.class_pools[c]
                room = placer.free[cp, k : k + L].min(axis=1) > 0
                ask = int(prep.pool_ask[cp[room]].min()) if room.any() else -1
                exit_memo[key] = ask
            if ask >= 0:
                best = max(best, int(prep.e_limit[e]) - ask)
        return best

    # marginal value of the i-th device-slot group member served: a served single's limit less what it
    # would get outside, or an unserved single's limit (each entrant counted in its best group only)
    marg: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for pc in singles:
        key = (int(prep.pool_class[pc.pool]), pc.lease, pc.k)
        marg[key].append(pc.limit - exit_value(pc.order, pc.k, pc.lease))
        now_on[key][pc.pool] += 1
    free_units = np.nonzero(units & ~placer.filled)[0]
    if len(free_units):
        emask = np.isin(prep.e_order, free_units) & np.isin(prep.e_class, sorted(classes))
        best_e: dict[int, tuple[int, tuple[int, int, int]]] = {}
        for e in np.nonzero(emask)[0].tolist():
            o = int(prep.e_order[e])
            key = (int(prep.e_class[e]), int(prep.order_lease[o]), int(prep.e_start[e]))
            v = int(prep.e_limit[e]) - int(prep.class_min_ask[key[0]])
            if o not in best_e or v > best_e[o][0]:
                best_e[o] = (v, key)
        ent: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for o, (_v, key) in best_e.items():
            e_lim = max(int(prep.e_limit[e]) for e in prep.order_edges[o].tolist() if int(prep.e_class[e]) == key[0])
            ent[key].append(e_lim)
        for key, lims in ent.items():
            marg[key].extend(sorted(lims, reverse=True)[:entrant_cap])
    for key in sorted(marg):
        c, L, k = key
        vals = sorted(marg[key], reverse=True)
        svars = []
        for p in prep.class_pools[c].tolist():
            ub = int(cap[pos[p], k : k + L].min())
            if ub <= 0:
                continue
            s = model.new_int_var(0, ub, "")
            model.add_hint(s, now_on[key].get(p, 0))
            svars.append(s)
            obj.append(-int(prep.pool_ask[p]) * L * slot * s)
            for t in range(k, k + L):
                usage[(p, t)].append(s)
        served_now = sum(now_on[key].values())
        # gangs can move at most `swing` devices in or out of the class: only that window of the sorted
        # values is free, those above it stay served and those below stay out
        swing = class_swing.get(c, 0)
        lo = max(0, served_now - swing)
        hi = min(len(vals), served_now + swing)
        ws = [model.new_bool_var("") for _ in range(lo, hi)]
        for i, w in enumerate(ws, start=lo):
            model.add_hint(w, i < served_now)
        for w1, w2 in itertools.pairwise(ws):
            model.add_implication(w2, w1)
        obj.extend(v * L * slot * w for v, w in zip(vals[lo:hi], ws, strict=True))
        model.add(lo + sum(ws) == sum(svars))
        n_vars += len(ws) + len(svars)
    if n_vars > max_vars:
        return None
    for (p, t), terms in usage.items():
        model.add(sum(terms) <= int(cap[pos[p], t]))
    model.maximize(sum(obj))
    ok = model.solve(backend, time_limit=time_limit, seed=seed)
    if model.limit_hit:
        prep.limits_hit.append("residual")
    if not ok:
        return None
    out: dict[int, Piece | None] = {o: None for o in gangs}
    for o, opts in gvars.items():
        for z, pc in opts:
            if model.value(z) > 0.5:
                out[o] = pc
    return out


class _Model:
    """The residual model with its hints recorded (so another backend could be plugged in); CP-SAT solves it."""

    def __init__(self) -> None:
        from ortools.sat.python import cp_model

        self.cp = cp_model.CpModel()
        self.vars: list[tuple[int, int, bool]] = []  # (lb, ub, is_bool)
        self.hints: dict[int, int] = {}
        self.cons: list[tuple[Any, float, float]] = []
        self.objective: Any = None
        self._vals: list[float] = []
        self.limit_hit = False

    def new_bool_var(self, name: str) -> cp_model.IntVar:
        v = self.cp.new_bool_var(name)
        self.vars.append((0, 1, True))
        return v

    def new_int_var(self, lb: int, ub: int, name: str) -> cp_model.IntVar:
        v = self.cp.new_int_var(lb, ub, name)
        self.vars.append((lb, ub, False))
        return v

    def add_hint(self, v: cp_model.IntVar, value: int | bool) -> None:
        self.cp.add_hint(v, int(value))
        self.hints[v.index] = int(value)

    def add_at_most_one(self, vs: Any) -> None:
        vs = list(vs)
        self.add(sum(vs) <= 1)

    def add_implication(self, a: cp_model.IntVar, b: cp_model.IntVar) -> None:
        self.add(a <= b)

    def add(self, ct: Any) -> None:
        self.cp.add(ct)

    def maximize(self, expr: Any) -> None:
        self.cp.maximize(expr)

    def solve(self, backend: str, *, time_limit: float, seed: int) -> bool:
        if backend == "cp-sat":  # the only backend for now; MIP solvers were slower on this model
            from ortools.sat.python import cp_model

            solver = cp_model.CpSolver()
            solver.parameters.max_deterministic_time = time_limit  # a work limit, never the wall clock
            solver.parameters.num_workers = 1
            solver.parameters.random_seed = seed
            status = solver.solve(self.cp)
            self.limit_hit = status in (cp_model.FEASIBLE, cp_model.UNKNOWN)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return False
            self._vals = [float(solver.value(self.cp.get_int_var_from_proto_index(i))) for i in range(len(self.vars))]
            return True
        raise ValueError(f"unknown residual backend {backend!r}")

    def value(self, v: cp_model.IntVar) -> float:
        return self._vals[v.index]
