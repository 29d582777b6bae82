"""Turn stored orders, offers and contracts into a `matching.model.Market` (no database access here).

The mapping is the contract between the service and the pure matching library:
- one matching Pool per live offer (id = offer id; its site is the provider site id); devices are the
  offer's, minus reservations: contracts made on that offer, and contracts on the same physical pool
  made on offers no longer open (so a withdrawn-and-reposted offer never double-sells a pool);
- model attributes (family, memory, SCU, software stack, domestic) come from the catalogue, so every
  pool of one model agrees;
- an order's acceptable models are resolved here (explicit codes plus constraints, including minimum
  TFLOPS and any-of stacks, which matching does not model) and its '*' limit is expanded per model;
- partially filled orders take part with their remaining devices;
- an order whose contract terms its commit would refuse never takes part (exchange.billing.contractable):
  compute-tier orders see only models with an SCU figure, and an order whose terms cannot be contracted
  for the lease this round would give it is skipped with the reason, so it never holds capacity;
- clearing time `now` is the next slot boundary: contracts start there, never in the past; the slot is
  the configured one unless very long leases need a coarser one (choose_slot).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from exchange.billing.compute_tier import TierTable
from exchange.billing.contractable import TermsCheck, needs_scu
from exchange.billing.tiers import load_tier_table
from identifiers.catalogue import AcceleratorModel, Catalogue
from identifiers.regions import RegionTable
from matching.eligibility import lease_slots
from matching.model import Market, Order, Pool, Reservation

DEFAULT_MAX_POOLS = 64


@dataclass(frozen=True, slots=True)
class OfferRow:
    """What the snapshot needs about one live offer, its pool and site."""

    offer_id: str
    offer_version: int
    provider_id: str
    pool_id: str
    pool_devices: int
    site_id: str
    region: str
    model: str
    memory_gb: int
    devices: int
    devices_per_node: int
    window_start: int
    window_end: int | None
    min_lease_seconds: int
    ask_fen: int
    billing_modes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrderRow:
    """What the snapshot needs about one open order."""

    order_id: str
    buyer_id: str
    status: str
    spec: dict[str, Any]
    quantity_devices: int | None
    filled_devices: int
    updated_at: int | None
    created_at: int
    home_region: str | None
    #: an SCU order's SCU already filled (by other exchanges' pools), decimal text
    filled_scu: str | None = None


@dataclass(frozen=True, slots=True)
class ContractRow:
    """A contract that holds capacity: devices of a pool (and maybe an offer) over [start, end)."""

    contract_id: str
    pool_id: str
    offer_id: str | None
    devices: int
    start_at: int
    end_at: int


@dataclass
class Snapshot:
    """The market handed to matching plus what the commit step re-checks (versions, states)."""

    market: Market
    offers: dict[str, OfferRow] = field(default_factory=dict)
    orders: dict[str, OrderRow] = field(default_factory=dict)
    skipped_orders: dict[str, str] = field(default_factory=dict)


SLOT_LADDER = (900, 3600, 21_600, 86_400)
SLOT_CELL_BUDGET = 20_000_000


def choose_slot(base: int, orders: Sequence[OrderRow], pools: int, max_start_slots: int) -> int:
    """The slot length for a round: `base`, or the next coarser ladder step (a multiple of base) when the
    longest lease would make matching's pool x slot capacity table exceed SLOT_CELL_BUDGET cells."""
    longest = max((int(o.spec.get("duration_seconds", 0)) for o in orders), default=0)
    candidates = [base] + [s for s in SLOT_LADDER if s > base and s % base == 0]
    for slot in candidates:
        if (-(-longest // slot) + max_start_slots) * max(pools, 1) <= SLOT_CELL_BUDGET:
            return slot
    return candidates[-1]


def clearing_now(now: int, slot_seconds: int) -> int:
    """The next slot boundary at or after `now`: the start of the earliest lease a round can make."""
    return -(-now // slot_seconds) * slot_seconds


def acceptable_models(spec: dict[str, Any], catalogue: Catalogue) -> list[AcceleratorModel]:
    """Catalogue models an order accepts: its explicit codes, plus those meeting its constraints."""
    codes = set(spec.get("models") or [])
    out = [m for m in catalogue.models if m.code in codes]
    cons = spec.get("constraints")
    if cons:
        out.extend(m for m in catalogue.models if m.code not in codes and _meets(m, cons))
    return out


def _meets(m: AcceleratorModel, c: dict[str, Any]) -> bool:
    if c.get("families") is not None and m.family not in c["families"]:
        return False
    if c.get("stack") is not None and (m.software_stack is None or m.software_stack not in c["stack"]):
        return False
    if c.get("domestic_only") and not m.domestic:
        return False
    if c.get("min_tflops") is not None:
        tflops = m.fp16_dense_tflops
        if tflops is None or tflops < Decimal(str(c["min_tflops"])):
            return False
    if c.get("min_memory_gb") is not None:
        mem = m.memory_gb
        if mem is None or mem < int(c["min_memory_gb"]):
            return False
    return True


def market_order(
    row: OrderRow, seq: int, catalogue: Catalogue, *, slot_seconds: int = 300, terms_check: TermsCheck | None = None
) -> Order | str:
    """The matching Order for a stored order, or the reason it cannot take part."""
    spec = row.spec
    models = acceptable_models(spec, catalogue)
    if not models:
        return "no_acceptable_model"
    mode = str(spec.get("billing_mode", "per_minute"))
    if needs_scu(mode):
        models = [m for m in models if m.scu is not None]
        if not models:
            return "no_model_with_scu"
    span = lease_slots(int(spec["duration_seconds"]), slot_seconds) * slot_seconds
    check = terms_check or TermsCheck(load_tier_table())
    refused = check(mode, spec.get("billing_terms"), span)
    if refused is not None:
        return f"terms_refused: {refused.field}: {refused.message}"
    codes = tuple(sorted(m.code for m in models))
    limits: dict[str, int] = {}
    per_device = spec.get("limit_fen_per_device_hour")
    if per_device:
        for code in codes:
            value = per_device.get(code, per_device.get("*"))
            if value is not None:
                limits[code] = int(value)
        if not limits:
            return "no_limit_for_models"
    scu_limit = spec.get("limit_fen_per_scu_hour")
    quantity_devices: int | None = None
    quantity_scu: Decimal | None = None
    if row.quantity_devices is not None:
        quantity_devices = row.quantity_devices - row.filled_devices
        if quantity_devices <= 0:
            return "already_filled"
    else:
        quantity_scu = Decimal(str(spec["quantity_scu"])) - Decimal(row.filled_scu or 0)
        if quantity_scu <= 0:
            return "already_filled"
    all_or_nothing = bool(spec.get("all_or_nothing", True))
    min_fill = int(spec.get("min_fill_devices") or 1)
    if quantity_devices is not None:
        min_fill = min(min_fill, quantity_devices)
    max_pools = spec.get("max_pools")
    if max_pools is None:
        max_pools = 1 if spec.get("colocation") == "node" else min(quantity_devices or DEFAULT_MAX_POOLS, 1000)
    return Order(
        id=row.order_id,
        buyer=row.buyer_id,
        seq=seq,
        quantity_devices=quantity_devices,
        quantity_scu=quantity_scu,
        models=codes,
        regions=tuple(spec.get("regions") or ()),
        home_region=spec.get("home_region") or row.home_region,
        max_latency_ms=spec.get("max_latency_ms"),
        all_or_nothing=all_or_nothing,
        min_fill_devices=min_fill,
        max_pools=int(max_pools),
        same_model=bool(spec.get("same_model", False)),
        colocation=str(spec.get("colocation", "any")),
        duration_seconds=int(spec["duration_seconds"]),
        start_earliest=spec.get("start_earliest"),
        start_latest=spec.get("start_latest"),
        limits=dict(sorted(limits.items())),
        limit_fen_per_scu_hour=None if per_device else (None if scu_limit is None else int(scu_limit)),
        billing_mode=str(spec.get("billing_mode", "per_minute")),
    )


def market_pool(offer: OfferRow, reserved: Iterable[ContractRow], catalogue: Catalogue) -> Pool:
    """The matching Pool for a live offer; `reserved` are the contracts that hold its capacity."""
    model = catalogue.get(offer.model)
    memory = model.memory_gb
    return Pool(
        id=offer.offer_id,
        site=offer.site_id,
        region=offer.region,
        model=offer.model,
        family=model.family,
        memory_gb=int(memory) if memory is not None else offer.memory_gb,
        scu=model.scu,
        stack=model.software_stack or "",
        domestic=model.domestic,
        devices=offer.devices,
        devices_per_node=max(1, offer.devices_per_node),
        ask_fen=offer.ask_fen,
        window_start=offer.window_start,
        window_end=offer.window_end,
        min_lease_seconds=offer.min_lease_seconds,
        billing_modes=offer.billing_modes,
        reserved=tuple(
            Reservation(c.devices, c.start_at, c.end_at)
            for c in sorted(reserved, key=lambda c: (c.start_at, c.end_at, c.contract_id))
        ),
    )


def latency_matrix(regions: RegionTable, used: Iterable[str]) -> dict[str, dict[str, int]]:
    """Round-trip latency between the regions a snapshot mentions (both directions)."""
    codes = sorted({r for r in used if r in regions})
    return {a: {b: regions.latency_ms(a, b) for b in codes} for a in codes}


def build_snapshot(
    *,
    now: int,
    offers: Sequence[OfferRow],
    orders: Sequence[OrderRow],
    contracts: Sequence[ContractRow],
    catalogue: Catalogue,
    regions: RegionTable,
    slot_seconds: int,
    max_start_slots: int,
    fee_bps: int,
    seed: int = 0,
    tiers: TierTable | None = None,
) -> Snapshot:
    """The market of one round from stored rows (already filtered to live offers and open orders)."""
    open_offers = {o.offer_id for o in offers}
    by_offer: dict[str, list[ContractRow]] = {}
    orphans: dict[str, list[ContractRow]] = {}
    for c in contracts:
        if c.offer_id is not None and c.offer_id in open_offers:
            by_offer.setdefault(c.offer_id, []).append(c)
        else:
            orphans.setdefault(c.pool_id, []).append(c)
    pools = []
    for offer in sorted(offers, key=lambda o: o.offer_id):
        if offer.model not in catalogue:
            continue
        held = by_offer.get(offer.offer_id, []) + orphans.get(offer.pool_id, [])
        pools.append(market_pool(offer, held, catalogue))
    snap = Snapshot(market=Market(now=now, pools=(), orders=()))
    check = TermsCheck(tiers or load_tier_table())
    market_orders = []
    for seq, row in enumerate(sorted(orders, key=lambda r: (r.created_at, r.order_id))):
        made = market_order(row, seq, catalogue, slot_seconds=slot_seconds, terms_check=check)
        if isinstance(made, str):
            snap.skipped_orders[row.order_id] = made
            continue
        market_orders.append(made)
        snap.orders[row.order_id] = row
    snap.offers = {o.offer_id: o for o in offers}
    used_regions = {p.region for p in pools}
    for o in market_orders:
        used_regions.update(o.regions)
        if o.home_region:
            used_regions.add(o.home_region)
    snap.market = Market(
        now=now,
        pools=tuple(pools),
        orders=tuple(market_orders),
        slot_seconds=slot_seconds,
        max_start_slots=max_start_slots,
        fee_bps=fee_bps,
        latency_ms=latency_matrix(regions, used_regions),
        seed=seed,
    )
    return snap
