"""Placement of an order's devices onto concrete pools of its classes, against free capacity per slot.

One routine serves the optimizer's repair, greedy and FIFO, so every method obeys the same rules: capacity
in every slot of the lease, offer windows (zero capacity outside), minimum lease, billing mode, at most K
pools, all-or-nothing or minimum fill, same model, co-location (site / region / any). Inside a class the
choice is best surplus, then best fit (the smallest hole that holds the piece), keeping large holes for
large gangs. A single-node gang (colocation "node", two devices or more) also needs one node of the pool
with room for it over its whole lease; `commit` puts it on the best-fitting node and records the node.
Other devices of a pool are interchangeable, so per slot they only need the pool's count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from matching.eligibility import Prepared


@dataclass(frozen=True)
class Piece:
    """Devices of one pool given to one order from start slot k for L slots at the order's limit."""

    order: int
    pool: int
    devices: int
    k: int
    lease: int
    limit: int
    edge: int
    node: int = -1


class NodeFitError(ValueError):
    """A single-node gang was committed where no node of its pool has room for it."""


class Placer:
    """Free capacity state plus the placement routine; pieces accumulate in `pieces`."""

    def __init__(self, prep: Prepared) -> None:
        self.prep = prep
        self.free = prep.free.copy()
        self._pieces: list[Piece] = []
        self._alive: list[bool] = []
        self.by_pool: dict[int, list[int]] = {}
        self.by_order: dict[int, list[int]] = {}
        self.filled = np.zeros(prep.n_orders, dtype=bool)
        self._bill_ok: dict[tuple[int, str], np.ndarray] = {}
        self.node_used: dict[int, np.ndarray] = {}  # pool -> [nodes, H] devices of single-node gangs
        self._welfare = 0  # welfare of the live pieces in cost units, kept as pieces come and go
        self._live: tuple[np.ndarray, np.ndarray] | None = None  # (orders, pools) of live pieces, until a change

    def copy(self) -> Placer:
        """An independent copy of the state (capacity, pieces, node use)."""
        out = Placer.__new__(Placer)
        out.prep = self.prep
        out.free = self.free.copy()
        out._pieces = list(self._pieces)
        out._alive = list(self._alive)
        out.by_pool = {k: list(v) for k, v in self.by_pool.items()}
        out.by_order = {k: list(v) for k, v in self.by_order.items()}
        out.filled = self.filled.copy()
        out._bill_ok = self._bill_ok
        out.node_used = {k: v.copy() for k, v in self.node_used.items()}
        out._welfare = self._welfare
        out._live = self._live
        return out

    def is_node_gang(self, order: int, devices: int) -> bool:
        """True when the piece must sit on one node (a single-node gang of two devices or more)."""
        return bool(self.prep.order_node[order]) and devices > 1

    def node_room(self, pool: int, k: int, lease: int) -> np.ndarray:
        """Room of each node of a pool for a single-node gang over slots [k, k + lease)."""
        sizes = self.prep.pool_node_sizes[pool]
        used = self.node_used.get(pool)
        if used is None:
            return sizes
        return sizes - used[:, k : k + lease].max(axis=1)

    def pick_node(self, pool: int, k: int, lease: int, devices: int) -> int | None:
        """Best-fitting node (smallest room that holds the gang, then lowest index), or None."""
        room = self.node_room(pool, k, lease)
        fit = np.nonzero(room >= devices)[0]
        if not len(fit):
            return None
        return int(fit[np.argmin(room[fit])])  # argmin takes the first (lowest index) on ties

    def _pool_mask(self, c: int, billing: str, lease: int) -> np.ndarray:
        key = (c, billing)
        m = self._bill_ok.get(key)
        pools = self.prep.class_pools[c]
        if m is None:
            m = np.array([billing in self.prep.pool_billing[int(p)] for p in pools], dtype=bool)
            self._bill_ok[key] = m
        return m & (self.prep.pool_min_lease_slots[pools] <= lease)

    def candidates(self, e: int, restrict: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pools of edge e's class usable for the order now, and their free devices over the lease."""
        prep = self.prep
        o = int(prep.e_order[e])
        c = int(prep.e_class[e])
        k = int(prep.e_start[e])
        L = int(prep.order_lease[o])
        pools = prep.class_pools[c]
        ok = self._pool_mask(c, prep.market.orders[o].billing_mode, L)
        if restrict is not None:
            ok = ok & restrict
        if not ok.any():
            return pools[:0], pools[:0]
        pools = pools[ok]
        avail = self.free[pools, k : k + L].min(axis=1) if L > 1 else self.free[pools, k]
        if self.prep.order_node[o]:
            best_node = np.array([int(self.node_room(int(p), k, L).max(initial=0)) for p in pools], dtype=np.int64)
            avail = np.minimum(avail, best_node)
        keep = avail > 0
        return pools[keep], avail[keep]

    def plan(
        self,
        oi: int,
        edges: np.ndarray,
        restrict: dict[int, np.ndarray] | None = None,
        *,
        first_fit: bool = False,
    ) -> list[Piece] | None:
        """Best feasible placement of order oi over the given edges, or None; does not change state.

        With first_fit (the FIFO baseline) the first feasible pool in catalogue order is taken instead.
        """
        prep = self.prep
        order = prep.market.orders[oi]
        K = order.max_pools
        L = int(prep.order_lease[oi])
        best: tuple[float, int, list[Piece]] | None = None
        if K == 1:
            for e in edges:
                e = int(e)
                pools, avail = self.candidates(e, None if restrict is None else restrict.get(e))
                if not len(pools):
                    continue
                n = int(prep.e_n[e])
                need = int(prep.e_need[e])
                lim = int(prep.e_limit[e])
                fit = (avail >= need) & (prep.pool_ask[pools] <= lim)
                if not fit.any():
                    continue
                pools = pools[fit]
                avail = avail[fit]
                take = np.minimum(avail, n)
                val = (lim - prep.pool_ask[pools]) * take
                if first_fit:
                    idx = int(np.argmin(pools))
                    k = int(prep.e_start[e])
                    return [Piece(oi, int(pools[idx]), int(take[idx]), k, L, lim, e)]
                # best value, then best fit (smallest hole), then pool index
                idx = np.lexsort((pools, avail, -val))[0]
                v = float(val[idx])
                k = int(prep.e_start[e])
                if best is None or v > best[0] or (v == best[0] and k < best[1]):
                    piece = Piece(oi, int(pools[idx]), int(take[idx]), k, L, lim, e)
                    best = (v, k, [piece])
            return None if best is None else best[2]
        # several pools: group candidate pools by start and co-location scope
        cands: dict[tuple[int, ...], list[tuple[int, int, int, int, int, int]]] = {}
        for e in edges:
            e = int(e)
            pools, avail = self.candidates(e, None if restrict is None else restrict.get(e))
            if not len(pools):
                continue
            k = int(prep.e_start[e])
            lim = int(prep.e_limit[e])
            c = int(prep.e_class[e])
            same = order.same_model or order.quantity_scu is not None
            for p, a in zip(pools.tolist(), avail.tolist(), strict=True):
                if int(prep.pool_ask[p]) > lim:
                    continue
                scope: tuple[int, ...] = (k,)
                if same:
                    scope += (int(prep.pool_model[p]),)
                if order.colocation == "site":
                    scope += (int(prep.pool_site[p]),)
                elif order.colocation == "region":
                    scope += (int(prep.pool_region[p]),)
                cands.setdefault(scope, []).append((lim - int(prep.pool_ask[p]), a, p, lim, e, c))
        for scope, items in sorted(cands.items()):
            if first_fit:
                items.sort(key=lambda t: t[2])
            else:
                items.sort(key=lambda t: (-t[0], -t[1], t[2]))
            e0 = items[0][4]
            n = int(prep.e_n[e0])
            need = int(prep.e_need[e0])
            got = 0
            val = 0
            pieces: list[Piece] = []
            for sur, a, p, lim, e, _c in items[:]:
                if got >= n or len(pieces) >= K:
                    break
                d = min(a, n - got)
                pieces.append(Piece(oi, p, d, scope[0], L, lim, e))
                got += d
                val += sur * d
            if got >= need and first_fit:
                return pieces
            if got >= need and (best is None or val > best[0] or (val == best[0] and scope[0] < best[1])):
                best = (float(val), scope[0], pieces)
        return None if best is None else best[2]

    def commit(self, pieces: list[Piece]) -> None:
        """Take the capacity of the pieces and record them; single-node gangs get a node (NodeFitError
        when none has room, before any state changes)."""
        placed = []
        for pc in pieces:
            if self.is_node_gang(pc.order, pc.devices):
                node = self.pick_node(pc.pool, pc.k, pc.lease, pc.devices)
                if pc.node >= 0 and self.node_room(pc.pool, pc.k, pc.lease)[pc.node] >= pc.devices:
                    node = pc.node  # keep a node already chosen (a placement copied from another placer)
                if node is None or len(pieces) != 1:  # a single-node gang is one piece (max_pools 1)
                    raise NodeFitError(f"no node of pool {pc.pool} holds {pc.devices} devices")
                pc = replace(pc, node=node)
                used = self.node_used.get(pc.pool)
                if used is None:
                    used = np.zeros((len(self.prep.pool_node_sizes[pc.pool]), self.free.shape[1]), dtype=np.int64)
                    self.node_used[pc.pool] = used
                used[node, pc.k : pc.k + pc.lease] += pc.devices
            placed.append(pc)
        for pc in placed:
            self.free[pc.pool, pc.k : pc.k + pc.lease] -= pc.devices
            assert self.free[pc.pool, pc.k : pc.k + pc.lease].min() >= 0
            i = len(self._pieces)
            self._pieces.append(pc)
            self._alive.append(True)
            self._welfare += self._piece_welfare(pc)
            self._live = None
            self.by_pool.setdefault(pc.pool, []).append(i)
            self.by_order.setdefault(pc.order, []).append(i)
        if pieces:
            self.filled[pieces[0].order] = True

    def commit_units(
        self,
        orders: np.ndarray,
        pools: np.ndarray,
        starts: np.ndarray,
        leases: np.ndarray,
        limits: np.ndarray,
        edges: np.ndarray,
    ) -> None:
        """Commit many one-device pieces at once (arrays of equal length); capacity updated with numpy."""
        if not len(orders):
            return
        H = self.free.shape[1]
        diff = np.zeros((self.free.shape[0], H + 1), dtype=np.int64)
        np.add.at(diff, (pools, starts), 1)
        np.add.at(diff, (pools, starts + leases), -1)
        self.free -= np.cumsum(diff, axis=1)[:, :H]
        if self.free.min() < 0:
            raise AssertionError("unit pieces exceed free capacity")
        base = len(self._pieces)
        rows = zip(
            orders.tolist(),
            pools.tolist(),
            starts.tolist(),
            leases.tolist(),
            limits.tolist(),
            edges.tolist(),
            strict=True,
        )
        self._live = None
        ask = self.prep.pool_ask[pools].astype(np.int64)
        self._welfare += int(((limits.astype(np.int64) - ask) * leases.astype(np.int64)).sum()) * self.prep.slot_seconds
        for i, (o, p, k, L, lim, e) in enumerate(rows, start=base):
            self._pieces.append(Piece(o, p, 1, k, L, lim, e))
            self._alive.append(True)
            self.by_pool.setdefault(p, []).append(i)
            self.by_order.setdefault(o, []).append(i)
        self.filled[orders] = True

    @property
    def pieces(self) -> list[Piece]:
        """The pieces currently committed."""
        return [pc for pc, a in zip(self._pieces, self._alive, strict=True) if a]

    def live_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Order and pool of every live piece as arrays, cached until the next commit or removal (the
        polish asks once per neighbourhood of an unchanged placement)."""
        if self._live is None:
            live = self.pieces
            self._live = (
                np.array([pc.order for pc in live], dtype=np.int64),
                np.array([pc.pool for pc in live], dtype=np.int64),
            )
        return self._live

    def pool_pieces(self, pool: int) -> list[tuple[int, Piece]]:
        """Live pieces on a pool with their indices."""
        return [(i, self._pieces[i]) for i in self.by_pool.get(pool, []) if self._alive[i]]

    def order_pieces(self, order: int) -> list[Piece]:
        """Live pieces of an order."""
        return [self._pieces[i] for i in self.by_order.get(order, []) if self._alive[i]]

    def remove(self, order: int) -> None:
        """Release every piece of an order."""
        for i in self.by_order.get(order, []):
            if self._alive[i]:
                pc = self._pieces[i]
                self.free[pc.pool, pc.k : pc.k + pc.lease] += pc.devices
                if pc.node >= 0:
                    self.node_used[pc.pool][pc.node, pc.k : pc.k + pc.lease] -= pc.devices
                self._alive[i] = False
                self._welfare -= self._piece_welfare(pc)
                self._live = None
        self.filled[order] = False

    def place(
        self,
        oi: int,
        edges: np.ndarray,
        restrict: dict[int, np.ndarray] | None = None,
        *,
        first_fit: bool = False,
    ) -> bool:
        """Plan and commit; True when the order got devices."""
        if self.filled[oi]:
            return False
        plan = self.plan(oi, edges, restrict, first_fit=first_fit)
        if plan is None:
            return False
        self.commit(plan)
        return True

    def welfare_units(self) -> int:
        """Welfare of the committed pieces in cost units (fen x slot_seconds per device-slot / 3600), kept
        up to date by commit and remove (summing the pieces each time was 5.6 of 87.7 CPU s of the polish
        on `leases` 56,000 x 10,000)."""
        return self._welfare

    def _piece_welfare(self, pc: Piece) -> int:
        """One piece's welfare in cost units."""
        return (int(pc.limit) - int(self.prep.pool_ask[pc.pool])) * pc.devices * pc.lease * self.prep.slot_seconds
