"""Bodies of inbound peer messages as validated models, and the cross-exchange contract record.

The envelope, signatures and message framing are pure protocol (top-level `federation` package); these are
the exchange-side bodies: what an order_offer, hold_commit, hold_release, mirror or capacity_summary carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from exchange.services.federation_capacity import Shape
from exchange.services.fields import DECIMAL_FRAC_DIGITS, DECIMAL_INT_DIGITS, DECIMAL_MAX, parse_ascii_decimal
from identifiers.errors import ValidationError

MIRRORABLE = frozenset({"usage", "settlement"})
MAX_ROUTES = 4000
MAX_ASKS = 64


class RouteTuple(NamedTuple):
    """A route on the wire: `steps` ((ask, devices), ...) None when not sent, `start_at` None likewise."""

    order_id: str
    owner: str
    devices: int
    model: str
    region: str
    asks: tuple[int, ...]
    steps: tuple[tuple[int, int], ...] | None
    start_at: int | None


def routes_from_json(data: Any, field: str = "body.routes") -> list[RouteTuple]:
    """(order id, owner, devices, model, region, asks) of a hub's routes (ValidationError naming `field`)."""
    if not isinstance(data, list) or len(data) > MAX_ROUTES:
        raise ValidationError(f"routes must be a list of at most {MAX_ROUTES}", field=field)
    out = []
    for r in data:
        ok = isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("order_id", "owner", "model", "region"))
        n = r.get("devices") if isinstance(r, dict) else None
        if not ok or not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValidationError("a route is {order_id, owner, devices >= 1, model, region}", field=field)
        asks = r.get("asks", [])
        if not isinstance(asks, list) or len(asks) > MAX_ASKS or not all(_fen(a) for a in asks):
            raise ValidationError(f"a route's asks are at most {MAX_ASKS} integers >= 0", field=field)
        steps = r.get("steps")
        if steps is not None and not (
            isinstance(steps, list)
            and len(steps) <= MAX_ASKS
            and all(isinstance(x, list) and len(x) == 2 and _fen(x[0]) and _fen(x[1]) and x[1] > 0 for x in steps)
            and sum(x[1] for x in steps) == n
        ):
            raise ValidationError("a route's steps are [ask, devices > 0] pairs adding up to its devices", field=field)
        ladder = None if steps is None else tuple((int(a), int(k)) for a, k in steps)
        start = r.get("start_at")
        if start is not None and not _fen(start):
            raise ValidationError("a route's start_at is a time in seconds", field=field)
        out.append(RouteTuple(r["order_id"], r["owner"], n, r["model"], r["region"], tuple(asks), ladder, start))
    return out


def route_json(
    order_id: str,
    owner: str,
    devices: int,
    model: str,
    region: str,
    start: int,
    end: int,
    price: int,
    steps: Sequence[tuple[int, int]],
) -> dict[str, Any]:
    """One route in the wire form of hub_routes and of a `rerouted` answer (`asks` and, per ask, `steps`)."""
    return {
        "order_id": order_id,
        "owner": owner,
        "devices": devices,
        "model": model,
        "region": region,
        "start_at": start,
        "end_at": end,
        "buyer_price_fen": price,
        "asks": [a for a, _n in steps],
        "steps": [[a, n] for a, n in steps],
    }


def _fen(a: Any) -> bool:
    return isinstance(a, int) and not isinstance(a, bool) and a >= 0


class ForwardedOrder(BaseModel):
    """The order part of an order_offer message: what the buyer's exchange asks the owner to hold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    origin_order_id: str = Field(min_length=1, max_length=64)
    buyer_id: str = Field(min_length=1, max_length=64)
    models: list[str] | None = Field(default=None, min_length=1, max_length=64)
    regions: list[str] | None = Field(default=None, min_length=1, max_length=64)
    limits: dict[str, int] = Field(min_length=1, max_length=64)
    billing_mode: str = Field(default="per_minute", max_length=24)
    devices_max: int = Field(ge=1, le=1_000_000)
    devices_min: int = Field(ge=1, le=1_000_000)
    start_at: int = Field(ge=0)
    end_at: int = Field(ge=1)
    # the order's shape (sent only when not the default, so an older owner still accepts plain orders)
    max_pools: int | None = Field(default=None, ge=1, le=1000)
    same_model: bool = False
    colocation: Literal["site", "region", "any"] = "any"
    #: an SCU order: SCU (A100-equivalents) to hold, converted per model with the owner's catalogue SCU, on
    #: one model; devices_max still caps the devices; scu_min is the least worth holding (default: all)
    quantity_scu: str | None = Field(default=None, max_length=40)
    scu_min: str | None = Field(default=None, max_length=40)
    #: a hub-routed order: hold only offers at these asks (the ladder steps the hub placed it on)
    asks: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1, max_length=64)

    def shape(self, scu: Mapping[str, Decimal | None]) -> Shape:
        """The placement shape for immediate matching; ValidationError naming a bad SCU field."""
        return Shape(
            max_pools=self.max_pools,
            same_model=self.same_model,
            colocation=self.colocation,
            quantity_scu=_positive_decimal(self.quantity_scu, "quantity_scu"),
            scu_min=_positive_decimal(self.scu_min, "scu_min"),
            scu=scu,
        )


def _positive_decimal(text: str | None, name: str) -> Decimal | None:
    """A peer's SCU figure by the API's rule for `quantity_scu` (ASCII digits, at most 12.4, > 0, <= 10^9):
    a verified peer is still input, and `Decimal()` would take Unicode digits, signs, exponents, NaN."""
    if text is None:
        return None
    value = parse_ascii_decimal(text, DECIMAL_INT_DIGITS, DECIMAL_FRAC_DIGITS)
    if value is None or not 0 < value <= DECIMAL_MAX:
        raise ValidationError(
            f"{name} must be a positive decimal of ASCII digits (at most {DECIMAL_MAX})", field=f"body.order.{name}"
        )
    return value


class CommitBody(BaseModel):
    """hold_commit body: the hold and the contracts the buyer's exchange signed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hold_id: str = Field(min_length=1, max_length=36)
    contracts: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class HoldRef(BaseModel):
    """hold_release body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hold_id: str = Field(min_length=1, max_length=36)


class MirrorItem(BaseModel):
    """One mirrored record: its type (usage, settlement), id, contract and the owner-signed envelope."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record_type: str
    record_id: str = Field(min_length=1, max_length=64)
    contract_id: str = Field(min_length=1, max_length=36)
    envelope: dict[str, Any]


class MirrorBody(BaseModel):
    """mirror body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    records: list[MirrorItem] = Field(min_length=1, max_length=1000)


class SummaryBody(BaseModel):
    """capacity_summary body: the DSSE envelope."""

    model_config = ConfigDict(extra="forbid", strict=True)

    summary: dict[str, Any]


def contract_body_for(
    *,
    contract_id: str,
    owner: str,
    buyer: str,
    hold_id: str,
    order: ForwardedOrder,
    owner_order_id: str,
    tranche: Any,
    devices: int,
    fee_bps: int,
    created_at: int,
    buyer_price_fen: int | None = None,
    provider_price_fen: int | None = None,
) -> dict[str, Any]:
    """The cross-exchange contract record both exchanges sign, at the owner's clearing prices (pay-as-ask,
    buyer price = provider ask, when none are given: an SCU order placed by immediate matching)."""
    return {
        "contract_id": contract_id,
        "kind": "cross_exchange",
        "owner_authority": owner,
        "buyer_authority": buyer,
        "hold_id": hold_id,
        "order_id": order.origin_order_id,
        "owner_order_id": owner_order_id,
        "buyer_id": order.buyer_id,
        "pool_id": tranche.pool_id,
        "pool_cri": tranche.pool_cri,
        "offer_id": tranche.offer_id,
        "provider_id": tranche.provider_id,
        "model": tranche.model,
        "region": tranche.region,
        "devices": devices,
        "start_at": order.start_at,
        "end_at": order.end_at,
        "buyer_price_fen": tranche.ask_fen if buyer_price_fen is None else buyer_price_fen,
        "provider_price_fen": tranche.ask_fen if provider_price_fen is None else provider_price_fen,
        "fee_bps": fee_bps,
        "billing_mode": order.billing_mode,
        "billing_terms": {},
        "created_at": created_at,
    }
