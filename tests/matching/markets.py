"""Hypothesis strategies and an independent feasibility checker for small random markets."""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal

from hypothesis import strategies as st

from matching.eligibility import limit_for, model_acceptable, region_allowed
from matching.model import Market, Order, Pool, Reservation

NOW = 1_767_225_600
MODELS = {
    "M-A": ("fa", 80, Decimal("3.17"), "CUDA", False),
    "M-B": ("fa", 48, Decimal("1.16"), "CUDA", False),
    "M-C": ("fc", 64, Decimal("1.03"), "CANN", True),
}
REGIONS = ["CN-BJ", "CN-SH", "CN-GD"]
LAT = {
    "CN-BJ": {"CN-BJ": 1, "CN-SH": 25, "CN-GD": 40},
    "CN-SH": {"CN-BJ": 25, "CN-SH": 1, "CN-GD": 30},
    "CN-GD": {"CN-BJ": 40, "CN-SH": 30, "CN-GD": 1},
}


@st.composite
def pools(draw, i: int) -> Pool:
    model = draw(st.sampled_from(sorted(MODELS)))
    fam, mem, scu, stack, dom = MODELS[model]
    dev = draw(st.integers(1, 8))
    reserved = ()
    if draw(st.booleans()) and dev > 1:
        reserved = (Reservation(draw(st.integers(1, dev - 1)), NOW - 3600, NOW + 3600 * draw(st.integers(1, 3))),)
    ws = None
    we = None
    if draw(st.integers(0, 4)) == 0:
        we = NOW + 3600 * draw(st.integers(1, 4))
    return Pool(
        id=f"P{i}",
        site=f"S{draw(st.integers(0, 2))}",
        region=draw(st.sampled_from(REGIONS)),
        model=model,
        family=fam,
        memory_gb=mem,
        scu=scu,
        stack=stack,
        domestic=dom,
        devices=dev,
        devices_per_node=draw(st.integers(1, dev)),
        ask_fen=draw(st.integers(100, 1000)),
        window_start=ws,
        window_end=we,
        min_lease_seconds=draw(st.sampled_from([0, 0, 7200])),
        billing_modes=("reserved",),
        reserved=reserved,
    )


@st.composite
def orders(draw, i: int, multi: bool = True, future: bool = True) -> Order:
    models = tuple(sorted(draw(st.sets(st.sampled_from(sorted(MODELS)), min_size=1, max_size=3))))
    limits = {m: draw(st.integers(50, 1500)) for m in models}
    scu = draw(st.integers(0, 5)) == 0
    k = draw(st.integers(1, 3)) if multi else 1
    colocation = draw(st.sampled_from(["node", "site", "region", "any"]))
    if colocation == "node":
        k = 1
    delay = draw(st.sampled_from([0, 0, 0, 3600, 7200])) if future else 0
    return Order(
        id=f"O{i}",
        buyer=f"B{i % 3}",
        seq=i,
        quantity_devices=None if scu else draw(st.integers(1, 6)),
        quantity_scu=Decimal(draw(st.integers(1, 8))) if scu else None,
        models=models,
        min_memory_gb=draw(st.sampled_from([0, 0, 64])),
        domestic_only=draw(st.integers(0, 5)) == 0,
        regions=tuple(sorted(draw(st.sets(st.sampled_from(REGIONS), max_size=2)))),
        home_region=draw(st.sampled_from(REGIONS)),
        max_latency_ms=draw(st.sampled_from([None, None, 30])),
        all_or_nothing=draw(st.booleans()),
        min_fill_devices=draw(st.integers(1, 3)),
        max_pools=k,
        same_model=draw(st.booleans()),
        colocation=colocation,
        duration_seconds=draw(st.sampled_from([600, 3600, 7200, 10800])),
        start_earliest=NOW + delay if delay else None,
        start_latest=NOW + delay + 3600 if delay else None,
        limits=limits,
        limit_fen_per_scu_hour=draw(st.integers(100, 900)) if scu else None,
    )


@st.composite
def markets(draw, max_orders: int = 8, max_pools: int = 5, multi: bool = True, future: bool = True) -> Market:
    n_p = draw(st.integers(1, max_pools))
    n_o = draw(st.integers(1, max_orders))
    return Market(
        now=NOW + draw(st.integers(0, 3599)),
        pools=tuple(draw(pools(i)) for i in range(n_p)),
        orders=tuple(draw(orders(i, multi, future)) for i in range(n_o)),
        fee_bps=draw(st.sampled_from([0, 50, 300])),
        latency_ms=LAT,
        seed=draw(st.integers(0, 3)),
    )


def check_feasible(m: Market, allocations) -> list[str]:
    """Independent check of every placement rule; returns the list of problems (empty when feasible)."""
    problems = []
    pools = {p.id: p for p in m.pools}
    orders = {o.id: o for o in m.orders}
    slot = m.slot_seconds
    slot0 = m.now - m.now % slot
    by_order = defaultdict(list)
    use = defaultdict(int)
    node_use: defaultdict[tuple[str, int, int], int] = defaultdict(int)
    for a in allocations:
        by_order[a.order_id].append(a)
        p = pools[a.pool_id]
        o = orders[a.order_id]
        if not model_acceptable(o, p):
            problems.append(f"{o.id}: model/memory/stack/domestic not acceptable on {p.id}")
        if not region_allowed(o, p.region, m.latency_ms):
            problems.append(f"{o.id}: region {p.region} not allowed")
        lim = limit_for(o, p.model, p.scu)
        if lim is None or lim < p.ask_fen:
            problems.append(f"{o.id}: limit below ask on {p.id}")
        if (a.start - slot0) % slot or a.end - a.start != -(-o.duration_seconds // slot) * slot:
            problems.append(f"{o.id}: lease not whole slots of its duration")
        if o.start_earliest is not None and o.start_earliest > m.now and a.start < o.start_earliest:
            problems.append(f"{o.id}: starts before its window")
        if o.start_latest is not None and a.start > o.start_latest:
            problems.append(f"{o.id}: starts after its window")
        if p.window_start is not None and a.start < p.window_start:
            problems.append(f"{o.id}: before offer window")
        if p.window_end is not None and a.end > p.window_end:
            problems.append(f"{o.id}: after offer window")
        if a.end - a.start < p.min_lease_seconds:
            problems.append(f"{o.id}: below min lease of {p.id}")
        for t in range(a.start, a.end, slot):
            use[(p.id, t)] += a.devices
        if o.colocation == "node" and a.devices > 1:
            sizes = [min(p.devices_per_node, p.devices - i * p.devices_per_node) for i in range(p.nodes)]
            if a.node is None or not 0 <= a.node < len(sizes) or a.devices > sizes[a.node]:
                problems.append(f"{o.id}: single-node gang of {a.devices} not on a node of {p.id} that holds it")
            else:
                for t in range(a.start, a.end, slot):
                    node_use[(p.id, a.node, t)] += a.devices
                    if node_use[(p.id, a.node, t)] > sizes[a.node]:
                        problems.append(f"{p.id} node {a.node}@{t}: single-node gangs exceed its devices")
    for (pid, t), d in use.items():
        p = pools[pid]
        held = sum(r.devices for r in p.reserved if r.start < t + slot and r.end > t)
        if d > p.devices - held:
            problems.append(f"{pid}@{t}: {d} devices > capacity {p.devices - held}")
    for oid, al in by_order.items():
        o = orders[oid]
        ps = [pools[a.pool_id] for a in al]
        devs = sum(a.devices for a in al)
        if len(al) > o.max_pools:
            problems.append(f"{oid}: {len(al)} pools > K={o.max_pools}")
        if len({a.start for a in al}) != 1:
            problems.append(f"{oid}: pieces start at different times")
        if (o.same_model or o.quantity_scu is not None) and len({p.model for p in ps}) > 1:
            problems.append(f"{oid}: mixed models")
        if o.colocation == "site" and len({p.site for p in ps}) > 1:
            problems.append(f"{oid}: spans sites")
        if o.colocation == "region" and len({p.region for p in ps}) > 1:
            problems.append(f"{oid}: spans regions")
        if o.quantity_devices is not None:
            need = o.quantity_devices if o.all_or_nothing else min(o.quantity_devices, o.min_fill_devices)
            if not need <= devs <= o.quantity_devices:
                problems.append(f"{oid}: {devs} devices outside [{need}, {o.quantity_devices}]")
        else:
            n = math.ceil(o.quantity_scu / ps[0].scu)
            if devs > n or (o.all_or_nothing and devs != n):
                problems.append(f"{oid}: {devs} devices for SCU order needing {n}")
    return problems


def repaired_then_thinned(m: Market, rnd, share: float):  # type: ignore[no-untyped-def]
    """The market's fast repair (prep, network, relaxation, placer) with a random share of the filled orders
    removed again (a placement that went through commits and removals)."""
    from matching.eligibility import prepare
    from matching.relaxation import build_network, relax
    from matching.repair import repair

    prep = prepare(m)
    net = build_network(prep)
    rel = relax(net)
    placer = repair(prep, net, rel)
    kept = placer.copy()
    for o in range(prep.n_orders):
        if placer.filled[o] and rnd.random() < share:
            placer.remove(o)
    return prep, net, rel, placer, kept


def plain_pool(
    pid: str, *, site: str = "S0", region: str = "CN-SH", devices: int = 8, per_node: int = 8, ask: int = 100
) -> Pool:
    """One pool of model M-A with the given shape and ask (hand-built markets)."""
    return Pool(
        id=pid,
        site=site,
        region=region,
        model="M-A",
        family="fa",
        memory_gb=80,
        scu=None,
        stack="CUDA",
        domestic=False,
        devices=devices,
        devices_per_node=per_node,
        ask_fen=ask,
    )


def pool_admits(m: Market, o: Order, p: Pool, lease_slots: int) -> bool:
    """The brute-force oracles' eligibility: the order has a limit for the pool's model at or above its ask,
    accepts the model and the region, and the lease is not below the pool's minimum."""
    lim = limit_for(o, p.model, p.scu)
    if lim is None or lim < p.ask_fen or not model_acceptable(o, p):
        return False
    return region_allowed(o, p.region, m.latency_ms) and lease_slots * m.slot_seconds >= p.min_lease_seconds
