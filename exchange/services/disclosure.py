"""Who may read what (specs/signing.md section 9): the one rule for the API, the web pages and the CLI.

Commercial terms (contract parties, prices, settlement amounts, a round's per-order audit) are readable by the
parties they belong to, the regulator and the operator; everyone else sees what keeps the log verifiable
(leaf hashes, tree sizes, proofs, checkpoints) and aggregates over at least `min_orders` orders.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.storage.contracts import Contract
from exchange.storage.federation import PeerContract
from exchange.storage.orders import Order
from identifiers.errors import PermissionDeniedError

if TYPE_CHECKING:
    from exchange.services.ledger import LedgerService, StoredEntry

READ_ALL_ROLES = frozenset({"operator", "regulator"})


class Viewer(Protocol):
    """The authenticated caller (exchange.services.principals.Principal); None is an anonymous reader."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class LocalOperator:
    """Whoever runs a CLI command on the exchange's own database: the operator (who can read it all there)."""

    id: str = "local-operator"
    role: str = "operator"


LOCAL_OPERATOR = LocalOperator()


class NotDisclosedError(PermissionDeniedError):
    """The caller is not a party to this record (nor the regulator or the operator)."""

    code = "not_disclosed"


def may_read(viewer: Viewer | None, owners: Iterable[str]) -> bool:
    """True if `viewer` may read terms belonging to `owners`: one of them, a regulator or the operator."""
    if viewer is None:
        return False
    return viewer.role in READ_ALL_ROLES or viewer.id in set(owners)


def require_read(viewer: Viewer | None, owners: Iterable[str], what: str) -> None:
    """Return None if `viewer` may read `what` (see may_read), else raise NotDisclosedError (403)."""
    if not may_read(viewer, owners):
        raise NotDisclosedError(
            f"{what} is readable only by its parties, the regulator and the operator", reason="not_party"
        )


def public_aggregate(count: int, min_orders: int) -> bool:
    """True if an aggregate over `count` orders may be published (at least `min_orders` contributed)."""
    return count >= min_orders


def aggregate_minimum(viewer: Viewer | None, min_orders: int) -> int:
    """Orders an aggregate needs before `viewer` may see it: 1 for the regulator and the operator."""
    return 1 if viewer is not None and viewer.role in READ_ALL_ROLES else min_orders


# ------------------------------------------------------------------------------------------- log records


def record_contract_id(payload: bytes) -> str | None:
    """The `contract_id` a logged record (canonical DSSE envelope bytes) is about, if it names one."""
    try:
        envelope = json.loads(payload)
        body = json.loads(base64.b64decode(envelope["payload"] + "=" * (-len(envelope["payload"]) % 4)))
    except (ValueError, KeyError, TypeError):
        return None
    value = body.get("contract_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


async def contract_parties(session: AsyncSession, contract_id: str) -> frozenset[str]:
    """Participants party to a contract here: its buyer and provider; for a cross-exchange contract, the local
    buyer of the order (the provider is at the peer)."""
    owners: set[str] = set()
    row = await session.get(Contract, contract_id)
    if row is not None:
        owners.update((row.buyer_id, row.provider_id))
    buyer = await session.scalar(
        select(Order.buyer_id)
        .join(PeerContract, PeerContract.order_id == Order.id)
        .where(PeerContract.contract_id == contract_id)
    )
    if buyer is not None:
        owners.add(buyer)
    return frozenset(owners)


async def record_parties(session: AsyncSession, payload: bytes) -> frozenset[str]:
    """Participants party to a logged record (contract, contract event, usage, settlement); empty when the
    record names no contract of this exchange (then only the regulator and the operator read it)."""
    contract_id = record_contract_id(payload)
    return frozenset() if contract_id is None else await contract_parties(session, contract_id)


# ------------------------------------------------------------------------------------------- rounds

ROUND_PUBLIC_AUDIT = (
    "ok",
    "ir_buyer_violations",
    "ir_provider_violations",
    "envy_violations",
    "budget_balanced",
    "pricing_rule",
    "checks",
)


def audit_order_ids(audit: Mapping[str, Any] | None) -> set[str]:
    """Order ids named by a round audit's per-order lines (each line starts with `<order id>:`)."""
    return {str(d).split(":", 1)[0] for d in (audit or {}).get("envy_details") or []}


def round_disclosure(
    view: Mapping[str, Any],
    viewer: Viewer | None,
    *,
    contracts: Iterable[tuple[str, str]],
    own_orders: Iterable[str],
    prices: Iterable[dict[str, Any]],
    min_orders: int,
) -> dict[str, Any]:
    """What `viewer` may see of a round: everything for the regulator and the operator; for anyone else the
    aggregates (counts, welfare, bound, gap, audit check counts, how many allocations commit dropped) and class
    prices where at least `min_orders` orders contracted; for a buyer also its own orders' contracts and audit
    lines.

    `contracts`: (contract id, order id) of the round; `own_orders`: the viewer's order ids among the round's
    contracts and audit lines; `prices`: per class, with the number of `orders` that contracted in it."""
    out = dict(view)
    classes = list(prices)
    out["prices"] = classes
    if viewer is not None and viewer.role in READ_ALL_ROLES:
        out["disclosure"] = "full"
        return out
    audit = dict(out.get("audit") or {})
    details = [str(d) for d in audit.get("envy_details") or []]
    out["audit"] = {k: audit[k] for k in ROUND_PUBLIC_AUDIT if k in audit} if audit else out.get("audit")
    out["prices"] = [p for p in classes if public_aggregate(int(p["orders"]), min_orders)]
    out["disclosure"] = "public"
    out.pop("contract_ids", None)
    out.pop("dropped", None)  # names orders and offers: the count (dropped_allocations) stays public
    if viewer is not None:
        mine = set(own_orders)
        out["own_contract_ids"] = sorted(c for c, order_id in contracts if order_id in mine)
        out["own_audit_details"] = [d for d in details if d.split(":", 1)[0] in mine]
    return out


async def read_entry(ledger: LedgerService, viewer: Viewer | None, index: int) -> StoredEntry:
    """Log entry `index` with its record bytes, for a party to its record, the regulator or the operator
    (NotDisclosedError otherwise; anyone may have its leaf hash and proofs from the ledger service)."""
    async with ledger.sessions() as session:
        stored = await ledger.entry(index, session)
        if viewer is not None and viewer.role in READ_ALL_ROLES:
            return stored
        owners = await record_parties(session, stored.payload)
    require_read(viewer, owners, f"log entry {index}")
    return stored
