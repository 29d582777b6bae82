"""Market model: pools, orders, the market snapshot and the clearing result, with their JSON form.

Units everywhere: money in integer fen; prices in fen per device-hour; times in integer epoch
seconds; SCU (A100-equivalents of dense FP16) as Decimal. The JSON form writes money as integers and
Decimals as strings; `specs/market-snapshot.schema.json` and `specs/clearing-result.schema.json`
document it.

Time model: the clearing round starts at `now` rounded down to a slot (`slot_seconds`). An order's lease
is `ceil(duration_seconds / slot_seconds)` whole slots; capacity is reserved and money is computed for
those slots. An order whose start window is open starts at the round's slot; an order whose window
opens later gets up to `max_start_slots` candidate start slots (a forward reservation).

Placement model: a pool is the placement unit (devices of one model at one site, possibly several
nodes; devices inside a pool are interchangeable). An order is placed on at most `max_pools` pools,
all-or-nothing or with a minimum fill, on one model if `same_model`, inside one node, one site or one
region if `colocation` says so. A pool has a node shape: `nodes` nodes of `devices_per_node` devices (the
last one holds what is left of `devices`); a gang with colocation "node" takes one pool and sits on one
node, so pools pack such gangs into whole nodes. Other devices of a pool stay interchangeable. An SCU
order is always filled on one model (its quantity is converted per model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal

from matching.errors import MarketError

Colocation = Literal["node", "site", "region", "any"]
COLOCATIONS: tuple[str, ...] = ("node", "site", "region", "any")
SNAPSHOT_FORMAT = "hetex.market-snapshot/1"
RESULT_FORMAT = "hetex.clearing-result/1"


@dataclass(frozen=True)
class Reservation:
    """Devices of a pool held by a running contract over [start, end)."""

    devices: int
    start: int
    end: int


@dataclass(frozen=True)
class Pool:
    """Supply: devices of one model at one site offered at an ask (fen per device-hour)."""

    id: str
    site: str
    region: str
    model: str
    family: str
    memory_gb: int
    scu: Decimal | None
    stack: str
    domestic: bool
    devices: int
    devices_per_node: int
    ask_fen: int
    window_start: int | None = None
    window_end: int | None = None
    min_lease_seconds: int = 0
    billing_modes: tuple[str, ...] = ("reserved",)
    reserved: tuple[Reservation, ...] = ()
    nodes: int = 0  # 0: derived as ceil(devices / devices_per_node)

    def __post_init__(self) -> None:
        if self.nodes == 0 and self.devices > 0 and self.devices_per_node > 0:
            object.__setattr__(self, "nodes", -(-self.devices // self.devices_per_node))

    def node_sizes(self) -> list[int]:
        """Devices of each node: devices_per_node each, the last ones holding what is left of `devices`."""
        per = self.devices_per_node
        return [max(0, min(per, self.devices - i * per)) for i in range(self.nodes)]


@dataclass(frozen=True)
class Order:
    """Demand: devices (or SCU per hour) with acceptable models, places, shape, time and limit prices."""

    id: str
    buyer: str
    seq: int
    quantity_devices: int | None = None
    quantity_scu: Decimal | None = None
    models: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    min_memory_gb: int = 0
    stack: str | None = None
    domestic_only: bool = False
    regions: tuple[str, ...] = ()
    home_region: str | None = None
    max_latency_ms: int | None = None
    all_or_nothing: bool = True
    min_fill_devices: int = 1
    max_pools: int = 1
    same_model: bool = True
    colocation: str = "any"
    duration_seconds: int = 3600
    start_earliest: int | None = None
    start_latest: int | None = None
    limits: dict[str, int] = field(default_factory=dict)
    limit_fen_per_scu_hour: int | None = None
    billing_mode: str = "reserved"

    def __hash__(self) -> int:
        return hash((self.id, self.seq))


@dataclass(frozen=True)
class Market:
    """A consistent snapshot of open orders and live pools; clearing is a pure function of it."""

    now: int
    pools: tuple[Pool, ...]
    orders: tuple[Order, ...]
    slot_seconds: int = 3600
    max_start_slots: int = 4
    fee_bps: int = 0
    latency_ms: dict[str, dict[str, int]] = field(default_factory=dict)
    seed: int = 0

    def __hash__(self) -> int:
        return hash((self.now, len(self.pools), len(self.orders), self.seed))

    def to_json(self) -> str:
        """Documented JSON form (specs/market-snapshot.schema.json)."""
        return json.dumps(market_to_dict(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> Market:
        """Parse and validate the JSON form."""
        return market_from_dict(json.loads(text))


@dataclass(frozen=True)
class Allocation:
    """Devices of one pool given to one order over [start, end) at integer prices; amounts balance."""

    order_id: str
    pool_id: str
    devices: int
    start: int
    end: int
    buyer_price_fen: int
    provider_price_fen: int
    buyer_pays: int
    provider_receives: int
    fee: int
    node: int | None = None  # node index inside the pool for a single-node gang, else None


@dataclass(frozen=True)
class ClassPrice:
    """Posted price of a (region, model, gang size, lease, start) class and its supply rent."""

    region: str
    model: str
    gang: int
    lease_slots: int
    start: int
    buyer_price: Decimal
    min_ask_fen: int
    rent: Decimal


@dataclass(frozen=True)
class RoundStats:
    """Numbers reported per clearing round."""

    method: str
    welfare_fen: int
    lp_bound_fen: int
    gap: Decimal
    matched_devices: int
    matched_orders: int
    build_seconds: float
    solve_seconds: float
    price_seconds: float = 0.0
    components: int = 0
    orders: int = 0
    pools: int = 0
    edges: int = 0
    bound_method: str = "mcf"
    limits_hit: tuple[str, ...] = ()  # solver steps stopped by their deterministic work limit
    prices_method: str = "none"  # how posted prices were derived (matching.prices.PRICES_METHODS)
    bound_fen: int = 0  # best proven upper bound on the integer optimum (LP bound, or the integer root's if tighter)
    bound_gap: Decimal = Decimal(0)  # 1 - welfare / that bound: the welfare is at most this far below the optimum


@dataclass(frozen=True)
class AuditCheck:
    """One named audit check and how many violations it found."""

    name: str
    violations: int
    detail: str = ""


@dataclass(frozen=True)
class Audit:
    """Audit of a clearing: IR both sides, no-envy for losers, exact budget balance."""

    ir_buyer_violations: int
    ir_provider_violations: int
    envy_violations: int
    budget_balanced: bool
    uplift_fen_total: int
    fee_total: int
    pricing_rule: str
    checks: tuple[AuditCheck, ...] = ()
    envy_details: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no hard check (IR, budget, capacity, order shape) found a violation.

        No-envy violations come from gang integrality gaps and are reported, not treated as failures.
        """
        soft = {"no_envy", "fee_shortfall_fen"}
        hard = all(c.violations == 0 for c in self.checks if c.name not in soft)
        return hard and self.budget_balanced and self.ir_buyer_violations == 0 == self.ir_provider_violations


@dataclass(frozen=True)
class Unfilled:
    """An order left unfilled and why."""

    order_id: str
    reason: str


@dataclass(frozen=True)
class ClearingResult:
    """Allocations, posted prices, statistics and audit of one clearing."""

    allocations: tuple[Allocation, ...]
    prices: tuple[ClassPrice, ...]
    stats: RoundStats
    audit: Audit
    unfilled: tuple[Unfilled, ...] = ()

    def to_json(self) -> str:
        """Documented JSON form (specs/clearing-result.schema.json)."""
        return json.dumps(result_to_dict(self), sort_keys=True, separators=(",", ":"))

    def canonical_json(self) -> str:
        """The JSON form without the wall-clock statistics (`*_seconds`): equal bytes for equal snapshots."""
        d = result_to_dict(self)
        d["stats"] = {k: v for k, v in d["stats"].items() if not k.endswith("_seconds")}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> ClearingResult:
        """Parse the JSON form."""
        return result_from_dict(json.loads(text))


# ---------------------------------------------------------------- JSON conversion


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def _undec(v: Any, where: str) -> Decimal | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise MarketError(f"{where} must be a decimal string", field=where)
    try:
        d = Decimal(v)
    except ArithmeticError as exc:
        raise MarketError(f"{where} is not a decimal: {v!r}", field=where) from exc
    if not d.is_finite():
        raise MarketError(f"{where} must be finite", field=where)
    return d


def _plain(obj: Any) -> Any:
    """Dataclass -> JSON-ready dict (Decimal -> str, tuple -> list)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (tuple, list)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def market_to_dict(m: Market) -> dict[str, Any]:
    """Market -> plain dict of the JSON form."""
    out = _plain(m)
    out["format"] = SNAPSHOT_FORMAT
    for p in out["pools"]:
        p["reserved"] = [[r["devices"], r["start"], r["end"]] for r in p["reserved"]]
    return dict(out)


def _need(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise MarketError(f"{where}.{key} is required", field=f"{where}.{key}")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise MarketError(f"{where}.{key} has the wrong type", field=f"{where}.{key}")
    return v


def _opt_int(d: dict[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    v = d.get(key, default)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
        raise MarketError(f"{where}.{key} must be an integer", field=f"{where}.{key}")
    return v


def _pool_from(d: dict[str, Any], i: int) -> Pool:
    w = f"pools[{i}]"
    res = tuple(Reservation(int(a), int(b), int(c)) for a, b, c in d.get("reserved", []))
    return Pool(
        id=_need(d, "id", str, w),
        site=_need(d, "site", str, w),
        region=_need(d, "region", str, w),
        model=_need(d, "model", str, w),
        family=d.get("family", ""),
        memory_gb=_need(d, "memory_gb", int, w),
        scu=_undec(d.get("scu"), f"{w}.scu"),
        stack=d.get("stack", ""),
        domestic=bool(d.get("domestic", False)),
        devices=_need(d, "devices", int, w),
        devices_per_node=_opt_int(d, "devices_per_node", w, 8) or 8,
        ask_fen=_need(d, "ask_fen", int, w),
        window_start=_opt_int(d, "window_start", w),
        window_end=_opt_int(d, "window_end", w),
        min_lease_seconds=_opt_int(d, "min_lease_seconds", w, 0) or 0,
        billing_modes=tuple(d.get("billing_modes", ["reserved"])),
        reserved=res,
        nodes=_opt_int(d, "nodes", w, 0) or 0,
    )


def _order_from(d: dict[str, Any], i: int) -> Order:
    w = f"orders[{i}]"
    limits = d.get("limits", {}) or {}
    if not isinstance(limits, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in limits.values()):
        raise MarketError(f"{w}.limits must map model codes to integer fen", field=f"{w}.limits")
    return Order(
        id=_need(d, "id", str, w),
        buyer=d.get("buyer", ""),
        seq=_need(d, "seq", int, w),
        quantity_devices=_opt_int(d, "quantity_devices", w),
        quantity_scu=_undec(d.get("quantity_scu"), f"{w}.quantity_scu"),
        models=tuple(d.get("models", [])),
        families=tuple(d.get("families", [])),
        min_memory_gb=_opt_int(d, "min_memory_gb", w, 0) or 0,
        stack=d.get("stack"),
        domestic_only=bool(d.get("domestic_only", False)),
        regions=tuple(d.get("regions", [])),
        home_region=d.get("home_region"),
        max_latency_ms=_opt_int(d, "max_latency_ms", w),
        all_or_nothing=bool(d.get("all_or_nothing", True)),
        min_fill_devices=_opt_int(d, "min_fill_devices", w, 1) or 1,
        max_pools=_opt_int(d, "max_pools", w, 1) or 1,
        same_model=bool(d.get("same_model", True)),
        colocation=d.get("colocation", "any"),
        duration_seconds=_opt_int(d, "duration_seconds", w, 3600) or 3600,
        start_earliest=_opt_int(d, "start_earliest", w),
        start_latest=_opt_int(d, "start_latest", w),
        limits=dict(sorted(limits.items())),
        limit_fen_per_scu_hour=_opt_int(d, "limit_fen_per_scu_hour", w),
        billing_mode=d.get("billing_mode", "reserved"),
    )


def market_from_dict(d: dict[str, Any]) -> Market:
    """Plain dict of the JSON form -> validated Market."""
    if not isinstance(d, dict):
        raise MarketError("market snapshot must be an object")
    fmt = d.get("format", SNAPSHOT_FORMAT)
    if fmt != SNAPSHOT_FORMAT:
        raise MarketError(f"unknown snapshot format {fmt!r}", field="format")
    lat = d.get("latency_ms", {}) or {}
    m = Market(
        now=_need(d, "now", int, "market"),
        pools=tuple(_pool_from(p, i) for i, p in enumerate(_need(d, "pools", list, "market"))),
        orders=tuple(_order_from(o, i) for i, o in enumerate(_need(d, "orders", list, "market"))),
        slot_seconds=_opt_int(d, "slot_seconds", "market", 3600) or 3600,
        max_start_slots=_opt_int(d, "max_start_slots", "market", 4) or 4,
        fee_bps=_opt_int(d, "fee_bps", "market", 0) or 0,
        latency_ms={a: {b: int(v) for b, v in row.items()} for a, row in lat.items()},
        seed=_opt_int(d, "seed", "market", 0) or 0,
    )
    validate_market(m)
    return m


def validate_market(m: Market) -> None:
    """Raise MarketError on the first broken rule of a snapshot; return None when it is well formed."""
    if m.slot_seconds <= 0 or m.max_start_slots <= 0:
        raise MarketError("slot_seconds and max_start_slots must be positive", field="slot_seconds")
    if not 0 <= m.fee_bps < 10000:
        raise MarketError("fee_bps must be in [0, 10000)", field="fee_bps")
    ids: set[str] = set()
    for i, p in enumerate(m.pools):
        w = f"pools[{i}]"
        if p.id in ids:
            raise MarketError(f"duplicate pool id {p.id!r}", field=f"{w}.id")
        ids.add(p.id)
        if p.devices < 0 or p.devices_per_node <= 0 or p.ask_fen < 0 or p.memory_gb < 0:
            raise MarketError(f"{w}: counts, memory and ask must be non-negative", field=w)
        if p.nodes < 0 or p.nodes * p.devices_per_node < p.devices:
            raise MarketError(f"{w}.nodes x devices_per_node must hold the pool's devices", field=f"{w}.nodes")
        if p.scu is not None and p.scu <= 0:
            raise MarketError(f"{w}.scu must be positive", field=f"{w}.scu")
        for r in p.reserved:
            if r.devices < 0 or r.end < r.start:
                raise MarketError(f"{w}: bad reservation {r}", field=f"{w}.reserved")
        if p.window_start is not None and p.window_end is not None and p.window_end < p.window_start:
            raise MarketError(f"{w}: window ends before it starts", field=f"{w}.window_end")
    attrs: dict[str, tuple] = {}
    for i, p in enumerate(m.pools):
        a = (p.family, p.memory_gb, p.scu, p.stack, p.domestic)
        if attrs.setdefault(p.model, a) != a:
            raise MarketError(f"pools[{i}]: model {p.model} attributes differ from another pool", field=f"pools[{i}]")
    oids: set[str] = set()
    for i, o in enumerate(m.orders):
        w = f"orders[{i}]"
        if o.id in oids:
            raise MarketError(f"duplicate order id {o.id!r}", field=f"{w}.id")
        oids.add(o.id)
        if (o.quantity_devices is None) == (o.quantity_scu is None):
            raise MarketError(f"{w}: give exactly one of quantity_devices, quantity_scu", field=w)
        if o.quantity_devices is not None and o.quantity_devices <= 0:
            raise MarketError(f"{w}.quantity_devices must be positive", field=f"{w}.quantity_devices")
        if o.quantity_scu is not None and o.quantity_scu <= 0:
            raise MarketError(f"{w}.quantity_scu must be positive", field=f"{w}.quantity_scu")
        if o.colocation not in COLOCATIONS:
            raise MarketError(f"{w}.colocation must be one of {COLOCATIONS}", field=f"{w}.colocation")
        if o.colocation == "node" and o.max_pools != 1:
            raise MarketError(f"{w}: a single-node gang takes one pool (max_pools 1)", field=f"{w}.max_pools")
        if o.max_pools <= 0 or o.min_fill_devices <= 0 or o.duration_seconds <= 0:
            raise MarketError(f"{w}: max_pools, min_fill_devices, duration must be positive", field=w)
        if any(v < 0 for v in o.limits.values()) or (o.limit_fen_per_scu_hour or 0) < 0:
            raise MarketError(f"{w}: limit prices must be non-negative", field=f"{w}.limits")
        if not o.limits and o.limit_fen_per_scu_hour is None:
            raise MarketError(f"{w}: give limits per model or limit_fen_per_scu_hour", field=f"{w}.limits")


def _alloc_from(d: dict[str, Any]) -> Allocation:
    return Allocation(**{f.name: d[f.name] for f in fields(Allocation) if f.name in d})


def result_to_dict(r: ClearingResult) -> dict[str, Any]:
    """ClearingResult -> plain dict of the JSON form."""
    out = _plain(r)
    out["format"] = RESULT_FORMAT
    out["audit"]["ok"] = r.audit.ok
    return dict(out)


def result_from_dict(d: dict[str, Any]) -> ClearingResult:
    """Plain dict of the JSON form -> ClearingResult."""
    if d.get("format", RESULT_FORMAT) != RESULT_FORMAT:
        raise MarketError("unknown clearing-result format", field="format")
    prices = tuple(
        ClassPrice(
            **{
                **p,
                "buyer_price": Decimal(p["buyer_price"]),
                "rent": Decimal(p["rent"]),
            }
        )
        for p in d["prices"]
    )
    s = dict(d["stats"])
    s["gap"] = Decimal(s["gap"])
    s["bound_gap"] = Decimal(s.get("bound_gap", "0"))
    s["limits_hit"] = tuple(s.get("limits_hit", ()))
    a = dict(d["audit"])
    a.pop("ok", None)
    a["checks"] = tuple(AuditCheck(**c) for c in a.get("checks", []))
    a["envy_details"] = tuple(a.get("envy_details", []))
    return ClearingResult(
        allocations=tuple(_alloc_from(x) for x in d["allocations"]),
        prices=prices,
        stats=RoundStats(**s),
        audit=Audit(**a),
        unfilled=tuple(Unfilled(**u) for u in d.get("unfilled", [])),
    )
