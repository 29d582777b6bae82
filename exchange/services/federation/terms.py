"""What the buyer's side reads from a local order to forward it, and the checks a held line must pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exchange.services.federation_capacity import limit_for
from exchange.storage.orders import Order
from federation.peering import PeerIdentity
from identifiers.cri import parse_cri
from identifiers.errors import ValidationError


def order_terms(order: Order) -> dict[str, Any]:
    """What federation needs from an order's spec (DESIGN.md section 6 fields; device quantities only)."""
    spec = order.spec or {}
    limits = spec.get("limit_fen_per_device_hour") or {}
    return {
        "models": spec.get("models"),
        "regions": spec.get("regions"),
        "limits": {str(k): int(v) for k, v in limits.items()},
        "billing_mode": spec.get("billing_mode") or order.billing_mode or "per_minute",
        "duration": int(spec.get("duration_seconds") or 3600),
        "start_earliest": spec.get("start_earliest"),
        "all_or_nothing": bool(spec.get("all_or_nothing", True)),
        "min_fill_devices": spec.get("min_fill_devices"),
        "max_pools": spec.get("max_pools"),
        "same_model": bool(spec.get("same_model", False)),
        "colocation": str(spec.get("colocation") or "any"),
    }


def shape_fields(terms: Mapping[str, Any]) -> dict[str, Any]:
    """The order_offer shape fields that differ from the default (max_pools, same_model, colocation)."""
    out: dict[str, Any] = {}
    if terms["max_pools"] is not None:
        out["max_pools"] = int(terms["max_pools"])
    if terms["same_model"]:
        out["same_model"] = True
    if terms["colocation"] != "any":
        out["colocation"] = terms["colocation"]
    return out


def check_shape(lines: Sequence[Mapping[str, Any]], terms: Mapping[str, Any]) -> None:
    """The held lines keep the order's shape: at most max_pools pools, one model, one site or region."""
    bodies = [line.get("body") or {} for line in lines]
    problems = []
    if terms["max_pools"] is not None and len({b.get("pool_cri") for b in bodies}) > int(terms["max_pools"]):
        problems.append("max_pools")
    if terms["same_model"] and len({b.get("model") for b in bodies}) > 1:
        problems.append("same_model")
    if terms["colocation"] == "region" and len({b.get("region") for b in bodies}) > 1:
        problems.append("colocation")
    if terms["colocation"] == "site" and len({str(parse_cri(str(b.get("pool_cri"))).site_cri) for b in bodies}) > 1:
        problems.append("colocation")
    if problems:
        raise ValidationError(f"held lines break the order's shape: {', '.join(problems)}", field=problems[0])


def check_line(
    line: Mapping[str, Any],
    *,
    authority: str,
    peer: PeerIdentity,
    order: Order,
    terms: Mapping[str, Any],
    start: int,
    end: int,
) -> None:
    """A held line must be the contract we (`authority`) asked for: our order, allowed model/region, price."""
    b = line.get("body") or {}
    problems = []
    if b.get("buyer_authority") != authority or b.get("owner_authority") != peer.authority:
        problems.append("authorities")
    if b.get("order_id") != order.id or b.get("contract_id") != line.get("contract_id"):
        problems.append("ids")
    if b.get("start_at") != start or b.get("end_at") != end:
        problems.append("span")
    if terms["models"] is not None and b.get("model") not in terms["models"]:
        problems.append("model")
    if terms["regions"] is not None and b.get("region") not in terms["regions"]:
        problems.append("region")
    limit = limit_for(terms["limits"], str(b.get("model")))
    if limit is None or int(b.get("buyer_price_fen", 1 << 60)) > limit:
        problems.append("price")
    if int(b.get("devices", 0)) != int(line.get("devices", -1)) or int(b.get("devices", 0)) < 1:
        problems.append("devices")
    if problems:
        raise ValidationError(f"held line breaks the order: {', '.join(problems)}", field="lines")
