"""Buyer orders: the order model (DESIGN.md section 6), idempotent race-safe submission, listing with
cursor pagination, cancellation, and feasibility flags saying why no registered capacity could fill it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator
from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.billing.compute_tier import TierTable
from exchange.billing.contractable import needs_scu, submission_refusal
from exchange.billing.tiers import load_tier_table
from exchange.services.canonical import fast_canonical_bytes
from exchange.services.fields import (
    DECIMAL_FRAC_DIGITS,
    DECIMAL_INT_DIGITS,
    DECIMAL_MAX,
    MAX_DEVICES,
    REQUEST_MODEL,
    Code,
    DeviceCount,
    EpochSeconds,
    Name,
    PositiveFen,
    RegionCode,
    Seconds,
    ascii_decimal,
    decimal_schema,
)
from exchange.services.nonces import NonceClaim, NonceStore
from exchange.services.principals import Principal
from exchange.services.registration import BillingMode
from exchange.storage.base import now_s
from exchange.storage.orders import Order
from exchange.storage.registration import Offer, Pool, Site
from exchange.storage.transactions import Prepared, Transaction, in_transaction
from identifiers.catalogue import AcceleratorModel, Catalogue
from identifiers.errors import ConflictError, NotFoundError, ValidationError
from identifiers.ids import new_id_str
from identifiers.regions import RegionTable

IDEMPOTENCY_KEY_MAX = 200
ORDER_STATUSES = ("open", "partially_filled", "filled", "cancelled", "expired")
CANCELLABLE = frozenset({"open", "partially_filled"})
DEFAULT_PAGE = 50
MAX_PAGE = 200


class IdempotencyConflictError(ConflictError):
    """The Idempotency-Key was already used by this buyer for a different order body."""

    code = "idempotency_key_reused"


class MissingIdempotencyKeyError(ValidationError):
    """POST /v1/orders needs an Idempotency-Key header."""

    code = "idempotency_key_required"


class UnknownOrderError(NotFoundError):
    """No order has this id."""

    code = "unknown_order"


class OrderNotCancellableError(ConflictError):
    """The order is already filled, cancelled or expired."""

    code = "order_not_cancellable"


class BadCursorError(ValidationError):
    """The pagination cursor is not one this service issued."""

    code = "invalid_cursor"


# --------------------------------------------------------------------------------------------- model


DecimalText = Annotated[
    Decimal,
    ascii_decimal(DECIMAL_INT_DIGITS, DECIMAL_FRAC_DIGITS, "12.5"),
    decimal_schema(DECIMAL_INT_DIGITS, DECIMAL_FRAC_DIGITS, "12.5"),
    Field(gt=0, le=DECIMAL_MAX, max_digits=16, decimal_places=4),
]


class Constraints(BaseModel):
    """Acceptable models described by properties instead of (or besides) a list of codes."""

    model_config = REQUEST_MODEL

    families: Annotated[list[Code], Field(min_length=1, max_length=40)] | None = None
    min_memory_gb: Annotated[StrictInt, Field(ge=1, le=65536)] | None = None
    min_tflops: DecimalText | None = None
    stack: Annotated[list[Code], Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="acceptable software stacks (any of), e.g. CUDA, CANN"
    )
    domestic_only: bool = False


class Milestone(BaseModel):
    """A project milestone and its share of the fixed price (basis points)."""

    model_config = REQUEST_MODEL

    name: Name
    share_bps: Annotated[StrictInt, Field(ge=1, le=10_000)]


class BillingTerms(BaseModel):
    """Terms of the chosen billing mode (subscription period, project price and milestones, tier table)."""

    model_config = REQUEST_MODEL

    period: Literal["monthly", "yearly"] | None = None
    fixed_price_fen: PositiveFen | None = None
    milestones: Annotated[list[Milestone], Field(min_length=1, max_length=50)] | None = None
    tier_table: Code | None = None


ModelCode = Annotated[str, Field(min_length=2, max_length=24, pattern=r"^[A-Z]{2,4}(-[A-Z0-9]{1,10}){1,3}$")]
LimitKey = Annotated[str, Field(min_length=1, max_length=24, pattern=r"^(\*|[A-Z]{2,4}(-[A-Z0-9]{1,10}){1,3})$")]


class OrderSpec(BaseModel):
    """Body of POST /v1/orders (DESIGN.md section 6)."""

    model_config = REQUEST_MODEL

    quantity_devices: DeviceCount | None = None
    quantity_scu: DecimalText | None = Field(default=None, description="SCU (A100-equivalents) per hour")
    models: Annotated[list[ModelCode], Field(min_length=1, max_length=64)] | None = None
    constraints: Constraints | None = None
    regions: Annotated[list[RegionCode], Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="allowed regions (data residency); absent: any"
    )
    home_region: RegionCode | None = None
    max_latency_ms: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None
    all_or_nothing: bool = True
    min_fill_devices: DeviceCount | None = None
    max_pools: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None
    same_model: bool = False
    colocation: Literal["node", "site", "region", "any"] = Field(
        default="any", description="node: one pool and one node of it (max_pools 1)"
    )
    duration_seconds: Seconds
    start_earliest: EpochSeconds | None = None
    start_latest: EpochSeconds | None = None
    limit_fen_per_device_hour: Annotated[dict[LimitKey, PositiveFen], Field(min_length=1, max_length=64)] | None = (
        Field(default=None, description="limit price per device-hour by model code ('*': any acceptable model)")
    )
    limit_fen_per_scu_hour: PositiveFen | None = None
    billing_mode: BillingMode = "per_minute"
    billing_terms: BillingTerms | None = None

    @model_validator(mode="after")
    def _rules(self) -> OrderSpec:
        if (self.quantity_devices is None) == (self.quantity_scu is None):
            raise ValueError("give exactly one of quantity_devices and quantity_scu")
        if self.models is None and self.constraints is None:
            raise ValueError("give models and/or constraints (which accelerators are acceptable)")
        if (self.limit_fen_per_device_hour is None) == (self.limit_fen_per_scu_hour is None):
            raise ValueError("give exactly one of limit_fen_per_device_hour and limit_fen_per_scu_hour")
        if self.colocation == "node" and (self.max_pools or 1) != 1:
            raise ValueError("colocation node takes one pool: max_pools must be 1")
        if self.min_fill_devices is not None:
            if self.all_or_nothing:
                raise ValueError("min_fill_devices applies only when all_or_nothing is false")
            if self.quantity_devices is not None and self.min_fill_devices > self.quantity_devices:
                raise ValueError("min_fill_devices must not exceed quantity_devices")
        if (
            self.start_earliest is not None
            and self.start_latest is not None
            and self.start_latest < self.start_earliest
        ):
            raise ValueError("start_latest must not be before start_earliest")
        if self.max_latency_ms is not None and self.regions is not None and self.home_region is None:
            pass  # the buyer's registered home region may supply it; checked by the service
        _check_terms(self.billing_mode, self.billing_terms)
        return self


def _check_terms(mode: str, terms: BillingTerms | None) -> None:
    given = set() if terms is None else set(terms.model_dump(exclude_none=True))
    needs = {"subscription": {"period"}, "project": {"fixed_price_fen"}, "compute_tier": {"tier_table"}}.get(
        mode, set()
    )
    allowed = needs | ({"milestones"} if mode == "project" else set())
    if needs - given:
        raise ValueError(f"billing_terms.{sorted(needs - given)[0]} is required for billing_mode {mode}")
    if given - allowed:
        raise ValueError(f"billing_terms.{sorted(given - allowed)[0]} does not apply to billing_mode {mode}")
    if terms is not None and terms.milestones is not None and sum(m.share_bps for m in terms.milestones) != 10_000:
        raise ValueError("billing_terms.milestones share_bps must add up to 10000")


class OrderFlag(BaseModel):
    """Why registered capacity could never fill the order (advisory: the order is kept)."""

    code: str
    message: str


class OrderView(BaseModel):
    """An order as the API shows it."""

    id: str
    buyer_id: str
    idempotency_key: str
    status: Literal["open", "partially_filled", "filled", "cancelled", "expired"]
    spec: dict[str, Any]
    billing_mode: BillingMode
    quantity_devices: int | None
    filled_devices: int
    flags: list[OrderFlag]
    created_at: int
    updated_at: int | None


class OrderPage(BaseModel):
    """A page of the caller's orders, newest first."""

    orders: list[OrderView]
    next_cursor: str | None


# One statement for every order insert (values passed as parameters), compiled once per dialect.
_PREPARED_INSERT_ORDER = Prepared(insert(Order.__table__))  # type: ignore[arg-type]


def order_view(row: Order) -> OrderView:
    """API form of an order row."""
    return OrderView(
        id=row.id,
        buyer_id=row.buyer_id,
        idempotency_key=row.idempotency_key,
        status=row.status,  # type: ignore[arg-type]
        spec=row.spec,
        billing_mode=row.billing_mode,  # type: ignore[arg-type]
        quantity_devices=row.quantity_devices,
        filled_devices=row.filled_devices,
        flags=[OrderFlag(**f) for f in row.flags or []],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def spec_json(spec: OrderSpec) -> dict[str, Any]:
    """The canonical stored form of an order spec (defaults filled in, nulls dropped, Decimals as text)."""
    return spec.model_dump(mode="json", exclude_none=True)


def request_hash(spec: OrderSpec) -> str:
    """SHA-256 of the RFC 8785 canonical JSON of the normalized spec: equal bodies, equal hashes."""
    return spec_json_hash(spec_json(spec))


def spec_json_hash(stored_spec: dict[str, Any]) -> str:
    """request_hash of an already normalized spec (spec_json's result)."""
    return hashlib.sha256(fast_canonical_bytes(stored_spec)).hexdigest()


def check_idempotency_key(value: str | None) -> str:
    """The Idempotency-Key header value, or MissingIdempotencyKeyError/ValidationError."""
    if value is None or value == "":
        raise MissingIdempotencyKeyError("the Idempotency-Key header is required", field="Idempotency-Key")
    if len(value) > IDEMPOTENCY_KEY_MAX or not value.isascii() or not value.isprintable():
        raise ValidationError(
            f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX} printable ASCII characters", field="Idempotency-Key"
        )
    return value


def encode_cursor(created_at: int, order_id: str) -> str:
    """Opaque cursor over (created_at, id)."""
    return base64.urlsafe_b64encode(json.dumps([created_at, order_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of encode_cursor, or BadCursorError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadCursorError("cursor is not valid; pass next_cursor unchanged", field="cursor") from None
    if type(created_at) is not int or not isinstance(order_id, str):
        raise BadCursorError("cursor is not valid; pass next_cursor unchanged", field="cursor")
    return created_at, order_id


# --------------------------------------------------------------------------------------------- feasibility


@dataclass(frozen=True, slots=True)
class CapacityRow:
    """One active pool, its site and its cheapest open ask (None when no open offer)."""

    pool_id: str
    site_id: str
    region: str
    model: str
    memory_gb: int
    devices: int
    min_ask_fen: int | None


def acceptable_models(spec: OrderSpec, catalogue: Catalogue) -> set[str]:
    """Catalogue codes the order accepts: its explicit list, and models meeting its constraints."""
    out: set[str] = set(spec.models or [])
    c = spec.constraints
    if c is not None:
        for m in catalogue.models:
            if _meets(m, c):
                out.add(m.code)
    return out


def _meets(m: AcceleratorModel, c: Constraints) -> bool:
    if c.families is not None and m.family not in c.families:
        return False
    if c.stack is not None and (m.software_stack is None or m.software_stack not in c.stack):
        return False
    if c.domestic_only and not m.domestic:
        return False
    if c.min_tflops is not None and (m.fp16_dense_tflops is None or m.fp16_dense_tflops < c.min_tflops):
        return False
    return not (c.min_memory_gb is not None and m.memory_gb is not None and m.memory_gb < c.min_memory_gb)


def _limit_for(spec: OrderSpec, model: str, catalogue: Catalogue) -> Decimal | None:
    """The buyer's limit in fen per device-hour for `model` (SCU limits converted with the model's SCU)."""
    if spec.limit_fen_per_device_hour is not None:
        limits = spec.limit_fen_per_device_hour
        value = limits.get(model, limits.get("*"))
        return None if value is None else Decimal(value)
    scu = catalogue.get(model).scu
    assert spec.limit_fen_per_scu_hour is not None
    return None if scu is None else Decimal(spec.limit_fen_per_scu_hour) * scu


def feasibility_flags(
    spec: OrderSpec, home_region: str | None, rows: list[CapacityRow], catalogue: Catalogue, regions: RegionTable
) -> list[OrderFlag]:
    """Reasons why no registered capacity could ever fill the order; empty when some could."""
    flags: list[OrderFlag] = []
    models = acceptable_models(spec, catalogue)
    if not models:
        return [
            OrderFlag(code="no_acceptable_model", message="no catalogue model meets the order's models/constraints")
        ]
    cands = [r for r in rows if r.model in models]
    if not cands:
        return [OrderFlag(code="no_pool_of_acceptable_model", message="no registered pool has an acceptable model")]
    c = spec.constraints
    if c is not None and c.min_memory_gb is not None:
        cands = [r for r in cands if r.memory_gb >= c.min_memory_gb]
        if not cands:
            return [OrderFlag(code="memory_too_small", message=f"no pool has {c.min_memory_gb} GB per device")]
    if spec.regions is not None:
        allowed = set(spec.regions)
        cands = [r for r in cands if r.region in allowed]
        if not cands:
            return [OrderFlag(code="no_pool_in_regions", message="no acceptable pool in the allowed regions")]
    if spec.max_latency_ms is not None and home_region is not None:
        near = set(regions.within_latency(home_region, spec.max_latency_ms))
        cands = [r for r in cands if r.region in near]
        if not cands:
            return [
                OrderFlag(
                    code="no_pool_within_latency",
                    message=f"no acceptable pool within {spec.max_latency_ms} ms of {home_region}",
                )
            ]
    limited = [r for r in cands if _limit_for(spec, r.model, catalogue) is not None]
    if not limited:
        return [OrderFlag(code="no_limit_for_models", message="no limit price covers an available model")]
    cands = limited
    priced = [r for r in cands if r.min_ask_fen is not None]
    if priced and all(r.min_ask_fen > (_limit_for(spec, r.model, catalogue) or 0) for r in priced):  # type: ignore[operator]
        flags.append(OrderFlag(code="limit_below_asks", message="the limit price is below every open ask"))
    need = _needed_devices(spec, cands, catalogue)
    if need is not None:
        flags.extend(_capacity_flags(spec, need, cands))
    return flags


def _needed_devices(spec: OrderSpec, cands: list[CapacityRow], catalogue: Catalogue) -> int | None:
    if spec.quantity_devices is not None:
        return spec.min_fill_devices if not spec.all_or_nothing and spec.min_fill_devices else spec.quantity_devices
    assert spec.quantity_scu is not None
    best = max((catalogue.get(r.model).scu or Decimal(0) for r in cands), default=Decimal(0))
    if best <= 0:
        return None
    devices = (spec.quantity_scu / best).to_integral_value(rounding=ROUND_CEILING)  # Decimal // truncates
    return min(int(devices), MAX_DEVICES)


def _capacity_flags(spec: OrderSpec, need: int, cands: list[CapacityRow]) -> list[OrderFlag]:
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for r in cands:
        key: tuple[str, ...] = ()
        if spec.all_or_nothing and spec.colocation == "site":
            key += (r.site_id,)
        elif spec.all_or_nothing and spec.colocation == "region":
            key += (r.region,)
        if spec.same_model:
            key += (r.model,)
        groups[key].append(r.devices)
    k = spec.max_pools
    best = max(sum(sorted(sizes, reverse=True)[:k] if k else sizes) for sizes in groups.values())
    if best >= need:
        return []
    where = {"site": "any one site", "region": "any one region"}.get(spec.colocation, "all allowed pools")
    if not spec.all_or_nothing:
        where = "all allowed pools"
    limit = f" using at most {k} pools" if k else ""
    return [
        OrderFlag(
            code="insufficient_capacity",
            message=f"the order needs {need} devices but {where}{limit} have at most {best}",
        )
    ]


# --------------------------------------------------------------------------------------------- service


@dataclass
class OrderService:
    """Buyer orders: submit (idempotent), read, list, cancel."""

    sessions: async_sessionmaker[AsyncSession]
    catalogue: Catalogue
    regions: RegionTable
    capacity_ttl_seconds: float = 2.0
    nonces: NonceStore | None = None
    tiers: Callable[[], TierTable] = load_tier_table
    #: the service clock: an order whose start window has already closed is refused against it
    clock: Callable[[], int] = now_s
    _capacity_cache: tuple[float, list[CapacityRow]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.nonce_store: NonceStore = self.nonces or NonceStore()
        self._families = frozenset(self.catalogue.families)

    def _check_codes(self, spec: OrderSpec, home_region: str | None) -> None:
        for i, code in enumerate(spec.models or []):
            if code not in self.catalogue:
                raise ValidationError(f"models.{i}: {code!r} is not in the accelerator catalogue", field=f"models.{i}")
        for key in spec.limit_fen_per_device_hour or {}:
            if key != "*" and key not in self.catalogue:
                raise ValidationError(
                    f"limit_fen_per_device_hour.{key}: not a catalogue model", field=f"limit_fen_per_device_hour.{key}"
                )
        known_families = self._families
        for i, fam in enumerate((spec.constraints.families or []) if spec.constraints else []):
            if fam not in known_families:
                raise ValidationError(
                    f"constraints.families.{i}: {fam!r} is not a catalogue family", field=f"constraints.families.{i}"
                )
        for i, region in enumerate(spec.regions or []):
            if region not in self.regions:
                raise ValidationError(f"regions.{i}: {region!r} is not served here", field=f"regions.{i}")
        if spec.home_region is not None and spec.home_region not in self.regions:
            raise ValidationError(f"home_region: {spec.home_region!r} is not served here", field="home_region")
        if spec.max_latency_ms is not None and home_region is None:
            raise ValidationError(
                "max_latency_ms needs a home_region (in the order or the buyer's registration)", field="home_region"
            )

    def _check_contractable(self, spec: OrderSpec, stored_spec: dict[str, Any]) -> None:
        """Refuse an order no round could ever turn into a contract (exchange.billing.contractable)."""
        refusal = submission_refusal(
            spec.billing_mode, stored_spec.get("billing_terms"), spec.duration_seconds, self.tiers()
        )
        if refusal is not None:
            raise refusal
        if needs_scu(spec.billing_mode):
            models = acceptable_models(spec, self.catalogue)
            if models and all(self.catalogue.get(code).scu is None for code in models):
                raise ValidationError(
                    f"billing_mode {spec.billing_mode} prices by SCU, and no acceptable model has an SCU figure",
                    field="models" if spec.models else "constraints",
                )

    async def submit(
        self, who: Principal, idempotency_key: str | None, spec: OrderSpec, nonce: NonceClaim | None = None
    ) -> tuple[OrderView, bool]:
        """Store a new order, or return the one stored under the same key (created=False); a reused key
        with a different body is IdempotencyConflictError. Race-safe through the unique constraint.

        `nonce` (the signed request's, from the auth layer) is remembered in the same transaction as the
        order, so both commit or neither does (see exchange.api.auth.remembers_nonce for why a replay of
        a request that failed is harmless); a replay of a stored request is refused (nonce_replayed)."""
        who.require_role("buyer", action="submit orders")
        key = check_idempotency_key(idempotency_key)
        now = self.clock()
        if spec.start_latest is not None and spec.start_latest < now:
            existing = await self._by_key(who.id, key)  # a retry of an order stored in time is still answered
            if existing is None:
                closed = f"start_latest: the start window closed at {spec.start_latest} (now {now})"
                raise ValidationError(closed, field="start_latest", now=now)
            return self._replay(existing, spec_json_hash(spec_json(spec))), False
        home = spec.home_region or who.home_region
        self._check_codes(spec, home)
        stored_spec = spec_json(spec)
        self._check_contractable(spec, stored_spec)
        body_hash = spec_json_hash(stored_spec)
        flags = feasibility_flags(spec, home, await self._capacity(), self.catalogue, self.regions)
        values: dict[str, Any] = {
            "id": new_id_str(),
            "buyer_id": who.id,
            "idempotency_key": key,
            "request_hash": body_hash,
            "spec": stored_spec,
            "billing_mode": spec.billing_mode,
            "status": "open",
            "quantity_devices": spec.quantity_devices,
            "filled_devices": 0,
            "start_latest": spec.start_latest,
            "flags": [f.model_dump() for f in flags],
            "created_at": now,
            "updated_at": now,
        }
        try:
            # Insert first: the unique (buyer_id, idempotency_key) constraint decides races; a retry
            # (sequential or concurrent) fails here, rolling back this request's nonce with it, and is
            # answered from a fresh read that remembers the nonce (so a replay of the retry is refused).
            await in_transaction(self.sessions, lambda tx: self._store(tx, values, nonce))
        except IntegrityError:
            existing = await self._by_key(who.id, key, nonce)
            if existing is None:
                raise
            return self._replay(existing, body_hash), False
        if nonce is not None:
            nonce.remembered = True
        values["flags"] = flags
        return OrderView(**{k: values[k] for k in OrderView.model_fields}), True

    async def _store(self, tx: Transaction, values: dict[str, Any], nonce: NonceClaim | None) -> None:
        """The order's one transaction (prepared statements, exchange.storage.transactions): nonce, then order."""
        if nonce is not None:
            await self.nonce_store.remember_in(tx, nonce)
        await tx.execute(_PREPARED_INSERT_ORDER, values)

    def _replay(self, row: Order, body_hash: str) -> OrderView:
        if row.request_hash != body_hash:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used for a different order body",
                field="Idempotency-Key",
                order_id=row.id,
            )
        return order_view(row)

    async def _by_key(self, buyer_id: str, key: str, nonce: NonceClaim | None = None) -> Order | None:
        async with self.sessions.begin() as session:
            if nonce is not None:
                await self.nonce_store.remember(session, nonce)
            query = select(Order).where(Order.buyer_id == buyer_id, Order.idempotency_key == key)
            row = (await session.execute(query)).scalar_one_or_none()
        if nonce is not None:
            nonce.remembered = True
        return row

    async def _capacity(self) -> list[CapacityRow]:
        """Active pools with their cheapest open ask, from a snapshot at most capacity_ttl_seconds old."""
        now = time.monotonic()
        if self._capacity_cache is not None and now - self._capacity_cache[0] < self.capacity_ttl_seconds:
            return self._capacity_cache[1]
        async with self.sessions() as session:
            rows = await self._load_capacity(session)
        self._capacity_cache = (now, rows)
        return rows

    async def _load_capacity(self, session: AsyncSession) -> list[CapacityRow]:
        query = (
            select(Pool.id, Site.id, Site.region, Pool.model, Pool.memory_gb, Pool.devices)
            .join(Site, Pool.site_id == Site.id)
            .where(Pool.status == "active", Site.status == "active")
        )
        pools = (await session.execute(query)).all()
        asks = dict(
            (
                await session.execute(
                    select(Offer.pool_id, func.min(Offer.ask_fen)).where(Offer.status == "open").group_by(Offer.pool_id)
                )
            ).all()
        )
        return [CapacityRow(p, s, r, m, mem, d, asks.get(p)) for p, s, r, m, mem, d in pools]

    async def get(self, who: Principal, order_id: str) -> OrderView:
        """One of the caller's orders (a regulator may read any)."""
        async with self.sessions() as session:
            row = await session.get(Order, order_id)
        if row is None:
            raise UnknownOrderError(f"no order {order_id}", field="id")
        if who.role != "regulator":
            who.require_owner(row.buyer_id, f"order {order_id}")
        return order_view(row)

    async def list_orders(
        self,
        who: Principal,
        *,
        status: str | None = None,
        billing_mode: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> OrderPage:
        """The caller's orders, newest first, filtered, one page at a time."""
        who.require_role("buyer", action="list orders")
        query = select(Order).where(Order.buyer_id == who.id)
        if status is not None:
            query = query.where(Order.status == status)
        if billing_mode is not None:
            query = query.where(Order.billing_mode == billing_mode)
        if created_after is not None:
            query = query.where(Order.created_at >= created_after)
        if created_before is not None:
            query = query.where(Order.created_at < created_before)
        if cursor is not None:
            c_at, c_id = decode_cursor(cursor)
            query = query.where(or_(Order.created_at < c_at, and_(Order.created_at == c_at, Order.id < c_id)))
        query = query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
        async with self.sessions() as session:
            rows = list((await session.execute(query)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return OrderPage(orders=[order_view(r) for r in rows], next_cursor=next_cursor)

    async def cancel(self, who: Principal, order_id: str) -> OrderView:
        """Cancel an open order (a second cancel returns the cancelled order)."""
        who.require_role("buyer", action="cancel orders")
        async with self.sessions.begin() as session:
            row = (
                await session.execute(select(Order).where(Order.id == order_id).with_for_update())
            ).scalar_one_or_none()
            if row is None:
                raise UnknownOrderError(f"no order {order_id}", field="id")
            who.require_owner(row.buyer_id, f"order {order_id}")
            if row.status == "cancelled":
                return order_view(row)
            if row.status not in CANCELLABLE:
                raise OrderNotCancellableError(f"order {order_id} is {row.status}", field="id")
            row.status, row.updated_at = "cancelled", int(time.time())
        return order_view(row)
