"""Contract creation for clearing rounds until the settlement stage's ContractService is wired in: the
contract row plus its signed record appended to the transparency log, in the round's transaction.

The record body has the same fields as the settlement stage's `contract_body`, so the log reads the
same whichever creates it. Replace with `ContractService.create_from_match` in the composition root
once that lands (it also validates billing terms per mode).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.registration import Pool, Site
from identifiers.errors import ValidationError
from identifiers.ids import new_id_str


class RecordLog(Protocol):
    """The transparency log as rounds use it (exchange.services.ledger.LedgerService)."""

    async def append(self, session: AsyncSession, record_type: str, record_id: str, body: dict[str, Any]) -> Any: ...


def contract_record(row: Contract) -> dict[str, Any]:
    """The signed contract record (what the log holds)."""
    return {
        "contract_id": row.id,
        "round_id": row.round_id,
        "order_id": row.order_id,
        "pool_id": row.pool_id,
        "offer_id": row.offer_id,
        "buyer_id": row.buyer_id,
        "provider_id": row.provider_id,
        "model": row.model,
        "region": row.region,
        "devices": row.devices,
        "start_at": row.start_at,
        "end_at": row.end_at,
        "buyer_price_fen": row.buyer_price_fen,
        "provider_price_fen": row.provider_price_fen,
        "fee_bps": row.fee_bps,
        "billing_mode": row.billing_mode,
        "billing_terms": row.billing_terms,
        "created_at": row.created_at,
    }


class LoggedContracts:
    """Creates a contract row and appends its signed record, in the caller's transaction."""

    def __init__(self, ledger: RecordLog, *, fee_bps: int) -> None:
        self.ledger = ledger
        self.fee_bps = fee_bps

    async def create_from_match(
        self,
        session: AsyncSession,
        *,
        order_id: str,
        pool_id: str,
        buyer_id: str,
        provider_id: str,
        devices: int,
        start_at: int,
        end_at: int,
        buyer_price_fen: int,
        provider_price_fen: int,
        billing_mode: str,
        billing_terms: dict[str, Any] | None = None,
        offer_id: str | None = None,
        round_id: str | None = None,
        fee_bps: int | None = None,
    ) -> Contract:
        """One contract for one matched piece; model and region come from the pool."""
        if devices < 1 or end_at <= start_at:
            raise ValidationError("a contract needs devices >= 1 and end_at after start_at", field="devices")
        found = await session.execute(
            select(Pool.model, Site.region).join(Site, Site.id == Pool.site_id).where(Pool.id == pool_id)
        )
        pool = found.one_or_none()
        if pool is None:
            raise ValidationError(f"pool {pool_id} does not exist", field="pool_id")
        model, region = pool
        row = Contract(
            id=new_id_str(),
            round_id=round_id,
            order_id=order_id,
            pool_id=pool_id,
            offer_id=offer_id,
            buyer_id=buyer_id,
            provider_id=provider_id,
            model=model,
            region=region,
            devices=devices,
            start_at=start_at,
            end_at=end_at,
            buyer_price_fen=buyer_price_fen,
            provider_price_fen=provider_price_fen,
            fee_bps=self.fee_bps if fee_bps is None else fee_bps,
            billing_mode=billing_mode,
            billing_terms=dict(billing_terms or {}),
            status="pending",
            created_at=now_s(),
        )
        session.add(row)
        await session.flush()
        appended = await self.ledger.append(session, "contract", row.id, contract_record(row))
        row.log_index = appended.index
        await session.flush()
        return row
