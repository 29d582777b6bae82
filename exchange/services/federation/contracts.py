"""Cross-exchange contracts as both sides keep them (PeerContract rows: the two-signature envelope)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.storage.federation import PeerContract


def peer_contract(
    side: str, peer: str, order_id: str, body: Mapping[str, Any], appended: Any, now: int
) -> PeerContract:
    """The row for a contract signed by both exchanges and appended to this log (side: owner or buyer)."""
    return PeerContract(
        contract_id=str(body["contract_id"]),
        side=side,
        peer_authority=peer,
        order_id=order_id,
        hold_id=str(body["hold_id"]),
        pool_cri=str(body["pool_cri"]),
        model=str(body["model"]),
        region=str(body["region"]),
        devices=int(body["devices"]),
        start_at=int(body["start_at"]),
        end_at=int(body["end_at"]),
        price_fen=int(body["buyer_price_fen"]),
        envelope=appended.envelope,
        log_index=appended.index,
        created_at=now,
    )


async def contracts_view(
    sessions: async_sessionmaker[AsyncSession], peer: str | None = None, order_id: str | None = None
) -> list[dict[str, Any]]:
    """Cross-exchange contracts known here (both sides), oldest first."""
    async with sessions() as session:
        stmt = select(PeerContract).order_by(PeerContract.created_at, PeerContract.contract_id)
        if peer:
            stmt = stmt.where(PeerContract.peer_authority == peer)
        if order_id:
            stmt = stmt.where(PeerContract.order_id == order_id)
        rows = (await session.scalars(stmt)).all()
    return [
        {
            "contract_id": r.contract_id,
            "side": r.side,
            "peer": r.peer_authority,
            "order_id": r.order_id,
            "hold_id": r.hold_id,
            "pool_cri": r.pool_cri,
            "model": r.model,
            "region": r.region,
            "devices": r.devices,
            "start_at": r.start_at,
            "end_at": r.end_at,
            "price_fen": r.price_fen,
            "log_index": r.log_index,
            "signatures": [s.get("keyid") for s in r.envelope.get("signatures", [])],
            "envelope": r.envelope,
        }
        for r in rows
    ]
