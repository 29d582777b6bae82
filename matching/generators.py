"""Benchmark instance families (reference section 7.6), deterministic for a seed.

Models carry memory and dense FP16 figures from shared/reference/accelerators.md; where the reference marks
dense FP16 unconfirmed, the model has no SCU figure (scu None: SCU orders cannot use it) and memory is the
most commonly quoted value. Regions are 14 Chinese provinces with a distance-based latency matrix
(RTT ~ 2 ms + 1.5 ms per 100 km great-circle).

'scale' is the reference instance of matching.md (section 7.6 item 1, the cluster trace): one clearing
epoch, every lease 1 h and starting now, 99% single-device orders and gangs of 2/4/8 (about 1.05 devices
per order), acceptable-model sets and per-architecture limits, 20% of pools partly held by running
contracts. 'scale-leases' is the harder variant the first generator called 'scale' (leases of 1-8 h all
starting now, 3% gangs): capacity is then time-indexed, value grows with the lease, and both the gang
repair and greedy lose much more; it is reported under its own name. 'valuation' keeps the scale-leases
shape with one limit for every acceptable model. 'contention' is scale-leases plus a few hot classes: the
three (region, model) classes with the most devices get demand `ratio` (default 4) times their supply
from orders that accept only that class and bid over a wide range (1.1-2.5 x the ask), so the allocation
decides who of many eligible bidders wins. 'leases' is 'scale' with real pod durations: lease lengths
drawn from a heavy-tailed (log-normal, median 3 h) distribution cut to 1 h - 3 days, all starting now.
'nodes' has multi-node pools (a quarter as many pools, 1-8 nodes of 8 or 4 devices each) and whole-node
gangs: 6% of orders are gangs of 2/4/8 that must sit on one node (colocation "node"), 2% are gangs of
16/32 that take whole nodes of one pool, the rest single devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from matching.model import Market, Order, Pool, Reservation

FAMILIES = (
    "scale",
    "scale-leases",
    "leases",
    "nodes",
    "contention",
    "valuation",
    "tightness",
    "gang",
    "greedy-trap",
    "windows",
    "prices",
)
# share of multi-device orders and the split of that share over gangs of 2 / 4 / 8 in 'scale'
SCALE_GANGS: tuple[float, tuple[float, float, float]] = (0.01, (0.15, 0.25, 0.6))
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z, a fixed clock so snapshots are reproducible


@dataclass(frozen=True)
class ModelSpec:
    """A catalogue model as the generators use it."""

    code: str
    family: str
    memory_gb: int
    fp16_tflops: float | None  # dense; None when unconfirmed
    stack: str
    domestic: bool
    ask_fen: int  # typical on-demand ask, fen per device-hour


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("NV-A100-80G", "ampere", 80, 312.0, "CUDA", False, 900),
    ModelSpec("NV-H100-SXM", "hopper", 80, 989.4, "CUDA", False, 2200),
    ModelSpec("NV-H800-SXM", "hopper", 80, 989.4, "CUDA", False, 2000),
    ModelSpec("NV-H20", "hopper", 96, 148.0, "CUDA", False, 700),
    ModelSpec("NV-L40S", "ada", 48, 362.05, "CUDA", False, 650),
    ModelSpec("NV-RTX4090", "ada", 24, 165.2, "CUDA", False, 250),
    ModelSpec("AMD-MI300X", "cdna3", 192, 1307.0, "ROCm", False, 2000),
    ModelSpec("HW-910B3", "davinci", 64, 320.0, "CANN", True, 900),
    ModelSpec("HW-910C", "davinci", 128, 781.0, "CANN", True, 1800),
    ModelSpec("CAM-MLU370-X8", "mluarch03", 48, 96.0, "NeuWare", True, 300),
    ModelSpec("CAM-MLU590", "mluarch05", 64, None, "NeuWare", True, 800),
    ModelSpec("HYG-K100-AI", "dcu", 64, None, "DTK", True, 700),
    ModelSpec("KLX-P800", "xpu-p", 96, None, "XPU", True, 800),
    ModelSpec("MX-C500", "maca", 64, None, "MXMACA", True, 700),
    ModelSpec("MT-S4000", "musa", 48, 100.0, "MUSA", True, 300),
    ModelSpec("ILU-BI-V100", "corex", 32, 147.0, "CoreX", True, 350),
    ModelSpec("BR-BR104", "biren", 32, 512.0, "BIRENSUPA", True, 600),
)

# region -> (latitude, longitude) of its main data-centre city, relative demand/supply weight, price factor
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "CN-BJ": (39.9, 116.4, 3.0, 1.28),
    "CN-TJ": (39.1, 117.2, 1.0, 1.15),
    "CN-HE": (38.0, 114.5, 1.5, 1.05),
    "CN-SH": (31.2, 121.5, 3.0, 1.25),
    "CN-JS": (32.1, 118.8, 2.0, 1.15),
    "CN-ZJ": (30.3, 120.2, 2.0, 1.18),
    "CN-GD": (23.1, 113.3, 3.0, 1.22),
    "CN-SC": (30.7, 104.1, 1.0, 1.0),
    "CN-CQ": (29.6, 106.5, 1.0, 1.0),
    "CN-NM": (41.0, 113.1, 2.0, 0.9),
    "CN-GZ": (26.6, 106.7, 2.0, 0.9),
    "CN-GS": (35.7, 107.6, 1.5, 0.88),
    "CN-NX": (37.5, 105.2, 1.5, 0.88),
    "CN-HB": (30.6, 114.3, 1.0, 1.05),
}


def scu_of(spec: ModelSpec) -> Decimal | None:
    """A100-equivalents of dense FP16 (TFLOPS / 312), two decimals; None when unconfirmed."""
    if spec.fp16_tflops is None:
        return None
    return (Decimal(repr(spec.fp16_tflops)) / Decimal(312)).quantize(Decimal("0.01"))


def latency_matrix() -> dict[str, dict[str, int]]:
    """Approximate round-trip latency in ms between regions from great-circle distance."""
    out: dict[str, dict[str, int]] = {}
    for a, (la, lo, _, _) in REGIONS.items():
        row = {}
        for b, (lb, mb, _, _) in REGIONS.items():
            p1, p2 = math.radians(la), math.radians(lb)
            dl = math.radians(mb - lo)
            d = 6371 * math.acos(min(1.0, math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)))
            row[b] = 1 if a == b else round(2 + 1.5 * d / 100)
        out[a] = row
    return out


class _Gen:
    """Shared random machinery for the families."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.regions = list(REGIONS)
        w = np.array([REGIONS[r][2] for r in self.regions])
        self.rw = w / w.sum()
        mw = np.array([3, 2, 2, 2, 2, 2, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=float)
        self.mw = mw / mw.sum()
        self.lat = latency_matrix()

    def pools(
        self,
        n: int,
        *,
        sizes: tuple[int, ...] = (8, 8, 8, 4, 2, 1),
        models: tuple[int, ...] | None = None,
        spot_share: float = 0.0,
        tiers: bool = False,
        reserved_share: float = 0.2,
        node_shapes: bool = False,
    ) -> list[Pool]:
        rng = self.rng
        out = []
        site = 0
        in_site = 0
        region = self.regions[0]
        site_size = 4
        for i in range(n):
            if in_site == 0:
                region = self.regions[int(rng.choice(len(self.regions), p=self.rw))]
                site += 1
                site_size = int(rng.integers(2, 8))
            in_site = (in_site + 1) % site_size
            mi = int(rng.choice(len(MODELS), p=self.mw)) if models is None else int(rng.choice(models))
            spec = MODELS[mi]
            dev = int(rng.choice(sizes))
            per_node = dev
            if node_shapes:
                per_node = int(rng.choice([8, 8, 4]))
                dev = per_node * int(rng.integers(1, 9))
            factor = REGIONS[region][3] * float(rng.uniform(0.9, 1.1))
            if tiers:
                factor *= float(rng.choice([0.85, 1.0, 1.2]))
            modes: tuple[str, ...] = ("reserved",)
            if spot_share and rng.random() < spot_share:
                factor *= float(rng.uniform(0.3, 0.6))
                modes = ("spot",)
            ask = max(1, int(spec.ask_fen * factor))
            reserved: tuple[Reservation, ...] = ()
            if reserved_share and rng.random() < reserved_share and dev > 1:
                held = int(rng.integers(1, dev))
                reserved = (Reservation(held, NOW - 3600, NOW + int(rng.integers(1, 12)) * 3600),)
            out.append(
                Pool(
                    id=f"P{i:06d}",
                    site=f"S{site:05d}",
                    region=region,
                    model=spec.code,
                    family=spec.family,
                    memory_gb=spec.memory_gb,
                    scu=scu_of(spec),
                    stack=spec.stack,
                    domestic=spec.domestic,
                    devices=dev,
                    devices_per_node=per_node,
                    ask_fen=ask,
                    billing_modes=modes,
                    reserved=reserved,
                )
            )
        return out

    def acceptable(self, k_max: int = 3) -> list[int]:
        rng = self.rng
        k = int(rng.integers(1, k_max + 1))
        first = int(rng.choice(len(MODELS), p=self.mw))
        fam_peers = [i for i, m in enumerate(MODELS) if m.family == MODELS[first].family and i != first]
        rest = [i for i in range(len(MODELS)) if i != first]
        picks = [first]
        pool = fam_peers + [int(x) for x in rng.permutation(rest)]
        for i in pool:
            if len(picks) >= k:
                break
            if i not in picks:
                picks.append(i)
        return picks

    def order(
        self,
        i: int,
        *,
        hetero: float = 1.0,
        residency: float = 0.3,
        latency_cap: int | None = None,
        latency_share: float = 0.7,
        gang: int | None = None,
        gang_mix: tuple[float, tuple[float, float, float]] = (0.03, (1 / 3, 1 / 3, 1 / 3)),
        mem_floor_share: float = 0.1,
        durations: tuple[int, ...] = (1, 1, 1, 2, 4, 8),
        start_delay: int = 0,
        start_slack: int | None = None,
        billing: str = "reserved",
    ) -> Order:
        rng = self.rng
        picks = self.acceptable()
        value = float(rng.uniform(1.1, 1.6))
        base = MODELS[picks[0]].ask_fen * value
        limits = {}
        for mi in picks:
            spec = MODELS[mi]
            per_arch = spec.ask_fen * value * float(rng.uniform(0.9, 1.25))
            limits[spec.code] = max(1, int((1 - hetero) * base + hetero * per_arch))
        if gang is None:
            share, (p2, p4, _p8) = gang_mix
            u = rng.random()
            if u < 1.0 - share:
                gang = 1
            else:
                v = (u - (1.0 - share)) / share
                gang = 2 if v < p2 else (4 if v < p2 + p4 else 8)
        regions: tuple[str, ...] = ()
        if rng.random() < residency:
            k = int(rng.integers(1, 4))
            regions = tuple(sorted(rng.choice(self.regions, size=k, replace=False, p=self.rw).tolist()))
        home = self.regions[int(rng.choice(len(self.regions), p=self.rw))]
        max_lat = None
        if not regions and rng.random() < latency_share:
            max_lat = latency_cap if latency_cap is not None else int(rng.choice([15, 25, 40]))
        min_mem = 0
        if rng.random() < mem_floor_share:
            min_mem = int(rng.choice([48, 64, 80]))
        dur = int(rng.choice(durations)) * 3600
        start_e = None
        start_l = None
        if start_delay:
            start_e = NOW + start_delay
            start_l = start_e + (start_slack if start_slack is not None else 3 * 3600)
        return Order(
            id=f"O{i:07d}",
            buyer=f"B{int(rng.integers(0, max(1, i // 3 + 1))):06d}",
            seq=i,
            quantity_devices=gang,
            models=tuple(sorted(limits)),
            min_memory_gb=min_mem,
            regions=regions,
            home_region=home,
            max_latency_ms=max_lat,
            duration_seconds=dur,
            start_earliest=start_e,
            start_latest=start_l,
            limits=dict(sorted(limits.items())),
            billing_mode=billing,
        )


def _market(g: _Gen, pools: list[Pool], orders: list[Order], seed: int, **kw: int) -> Market:
    return Market(
        now=NOW,
        pools=tuple(pools),
        orders=tuple(orders),
        latency_ms=g.lat,
        seed=seed,
        fee_bps=kw.get("fee_bps", 50),
        slot_seconds=kw.get("slot_seconds", 3600),
        max_start_slots=kw.get("max_start_slots", 4),
    )


def generate(family: str, orders: int, pools: int, seed: int, **knobs: float) -> Market:
    """An instance of a benchmark family with the given numbers of orders and pools."""
    g = _Gen(seed)
    rng = g.rng
    if family == "scale":
        # the reference instance (matching.md 7.6 item 1): one epoch, equal 1 h leases all starting now,
        # 99% single-device orders, gangs of 2/4/8 (about 1.05 devices per order, as in the trace)
        ps = g.pools(pools)
        os_ = [g.order(i, durations=(1,), gang_mix=SCALE_GANGS) for i in range(orders)]
        return _market(g, ps, os_, seed)
    if family == "leases":
        ps = g.pools(pools)
        os_ = []
        for i in range(orders):
            o = g.order(i, durations=(1,), gang_mix=SCALE_GANGS)
            hours = min(72, max(1, round(float(rng.lognormal(math.log(3.0), 1.2)))))
            os_.append(Order(**{**o.__dict__, "duration_seconds": hours * 3600}))
        return _market(g, ps, os_, seed)
    if family == "nodes":
        # the same number of devices as 'scale' in fewer, larger pools (1-8 nodes each)
        ps = g.pools(max(1, pools // 4), node_shapes=True)
        os_ = []
        for i in range(orders):
            u = rng.random()
            if u < 0.06:
                o = g.order(i, gang=int(rng.choice([2, 4, 8])), durations=(1, 1, 2, 4))
                o = Order(**{**o.__dict__, "colocation": "node"})
            elif u < 0.08:
                o = g.order(i, gang=int(rng.choice([16, 32])), residency=0.0, durations=(1, 2, 4))
                o = Order(**{**o.__dict__, "colocation": "site"})
            else:
                o = g.order(i, gang=1, durations=(1, 1, 2, 4))
            os_.append(o)
        return _market(g, ps, os_, seed)
    if family == "contention":
        return _contention(g, orders, pools, seed, float(knobs.get("ratio", 4.0)))
    if family in ("scale-leases", "valuation"):
        hetero = float(knobs.get("hetero", 1.0 if family != "valuation" else 0.0))
        ps = g.pools(pools)
        os_ = [g.order(i, hetero=hetero) for i in range(orders)]
        return _market(g, ps, os_, seed)
    if family == "tightness":
        ps = g.pools(pools)
        res = float(knobs.get("residency", 0.7))
        cap = int(knobs.get("latency_ms", 30))
        os_ = [
            g.order(i, residency=res, latency_cap=cap, latency_share=0.6, mem_floor_share=0.4) for i in range(orders)
        ]
        return _market(g, ps, os_, seed)
    if family == "gang":
        ps = g.pools(pools, sizes=(8, 8, 16))
        os_ = []
        for i in range(orders):
            if rng.random() < 0.05:
                size = int(rng.choice([16, 32, 64]))
                o = g.order(i, gang=size, residency=0.0)
                o = Order(**{**o.__dict__, "max_pools": 8, "colocation": "site", "same_model": True})
            else:
                o = g.order(i, gang=1)
            os_.append(o)
        return _market(g, ps, os_, seed)
    if family == "greedy-trap":
        return _greedy_trap(g, orders, pools, seed)
    if family == "windows":
        ps = g.pools(pools, reserved_share=0.4)
        os_ = []
        for i in range(orders):
            # Poisson arrivals over the next 6 hours; heavy-tailed durations (median ~10 min, p90 ~2 h)
            delay = int(rng.exponential(3600.0)) if rng.random() < 0.5 else 0
            slack = int(rng.choice([0, 3600, 6 * 3600]))
            dur = max(60, int(rng.lognormal(math.log(600), 1.9)))
            o = g.order(i, start_delay=delay, start_slack=slack)
            start_e = None if delay == 0 else NOW + delay
            start_l = None if delay == 0 else NOW + delay + slack
            o = Order(**{**o.__dict__, "duration_seconds": dur, "start_earliest": start_e, "start_latest": start_l})
            os_.append(o)
        return _market(g, ps, os_, seed)
    if family == "prices":
        ps = g.pools(pools, spot_share=0.25, tiers=True)
        os_ = [g.order(i, billing="spot" if rng.random() < 0.2 else "reserved") for i in range(orders)]
        return _market(g, ps, os_, seed)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def hot_classes(pools: list[Pool] | tuple[Pool, ...], n: int = 3) -> list[tuple[str, str]]:
    """The n (region, model) classes with the most devices (ties by name)."""
    size: dict[tuple[str, str], int] = {}
    for p in pools:
        size[(p.region, p.model)] = size.get((p.region, p.model), 0) + p.devices
    return sorted(size, key=lambda c: (-size[c], c))[:n]


def _contention(g: _Gen, orders: int, pools: int, seed: int, ratio: float) -> Market:
    """scale-leases with demand `ratio` x supply in the three largest classes (see the module docstring)."""
    rng = g.rng
    ps = g.pools(pools)
    hot = hot_classes(ps)
    supply = {c: sum(p.devices for p in ps if (p.region, p.model) == c) for c in hot}
    asks = {c: min(p.ask_fen for p in ps if (p.region, p.model) == c) for c in hot}
    n_hot = min(int(0.8 * orders), int(ratio * sum(supply.values())))
    hot_of = rng.permutation(orders)[:n_hot]
    weights = np.array([supply[c] for c in hot], dtype=float)
    cls = rng.choice(len(hot), size=n_hot, p=weights / weights.sum()) if n_hot else np.zeros(0, dtype=int)
    target = {int(i): hot[int(c)] for i, c in zip(hot_of.tolist(), cls.tolist(), strict=True)}
    os_ = []
    for i in range(orders):
        o = g.order(i)
        if i in target:
            region, model = target[i]
            lim = max(1, int(asks[(region, model)] * float(rng.uniform(1.1, 2.5))))
            o = Order(**{**o.__dict__, "models": (model,), "limits": {model: lim}, "regions": (region,)})
            o = Order(**{**o.__dict__, "max_latency_ms": None, "min_memory_gb": 0})
        os_.append(o)
    return _market(g, ps, os_, seed)


def _greedy_trap(g: _Gen, orders: int, pools: int, seed: int) -> Market:
    """Flexible high bidders vs inflexible slightly-lower bidders on a scarce type.

    The scarce type (H100) is the flexible bidders' best surplus, so greedy hands it to them and the
    inflexible bidders, who can use nothing else, go empty; the optimum moves the flexible bidders to an
    abundant alternative. Half the instance is the trap; the other half is an ordinary market.
    """
    rng = g.rng
    scarce, alt = "NV-H100-SXM", "HW-910C"
    sp = {m.code: m for m in MODELS}
    trap_pools = max(2, pools // 4)
    ps: list[Pool] = []
    for i in range(trap_pools):
        code = scarce if i % 2 == 0 else alt
        spec = sp[code]
        region = g.regions[i % len(g.regions)]
        ask = 2000 if code == scarce else 1600
        ps.append(
            Pool(
                id=f"T{i:06d}",
                site=f"TS{i:05d}",
                region=region,
                model=code,
                family=spec.family,
                memory_gb=spec.memory_gb,
                scu=scu_of(spec),
                stack=spec.stack,
                domestic=spec.domestic,
                devices=8,
                devices_per_node=8,
                ask_fen=ask,
            )
        )
    rest = g.pools(max(0, pools - trap_pools))
    ps.extend(Pool(**{**p.__dict__, "id": f"R{i:06d}"}) for i, p in enumerate(rest))
    scarce_dev = 8 * len([p for p in ps if p.model == scarce and p.id.startswith("T")])
    n_trap = min(orders // 2, 2 * scarce_dev)
    os_: list[Order] = []
    for i in range(n_trap):
        if i % 2 == 0:  # flexible: values H100 most, but the alternative nearly as much
            lim = {scarce: 3000 + int(rng.integers(0, 50)), alt: 2500 + int(rng.integers(0, 50))}
        else:  # inflexible: H100 only, slightly lower
            lim = {scarce: 2900 + int(rng.integers(0, 50))}
        os_.append(
            Order(
                id=f"O{i:07d}",
                buyer=f"TB{i:06d}",
                seq=i,
                quantity_devices=1,
                models=tuple(sorted(lim)),
                limits=dict(sorted(lim.items())),
            )
        )
    for i in range(n_trap, orders):
        os_.append(g.order(i))
    return _market(g, ps, os_, seed)
