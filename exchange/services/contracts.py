"""Contracts: created from a clearing match (signed and logged), read by their parties, confirmed, cancelled.

`create_from_match` makes one contract inside the caller's transaction: it validates the billing terms
(snapshotting tier price and SCU per device for compute-tier contracts), writes the row and appends the
signed contract record to the transparency log in that same transaction. Clearing rounds use its steps
for many contracts at once: `match_facts` (two queries), `build_from_match` per contract (no I/O), then
`sign_matched` (the signed records, before any write transaction) and one `write_matched` (one log append
batch, one insert batch), so their write transaction stays short.
Lifecycle and cancellation rules: specs/billing.md section 4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Table, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.billing.compute_tier import TierTable
from exchange.billing.contractable import contract_terms
from exchange.billing.terms import terms_to_json
from exchange.services.ledger import SignedRecord
from exchange.services.parties import Caller, require_party
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.participants import Participant
from exchange.storage.registration import Pool, Site
from federation.keys import SigningKey
from identifiers.catalogue import Catalogue
from identifiers.cri import parse_cri
from identifiers.errors import ConflictError, NotFoundError, ValidationError
from identifiers.ids import new_id_str

CONTRACT_COLUMNS = tuple(c.key for c in Contract.__mapper__.column_attrs)

CONTRACT_STATUSES = ("pending", "confirmed", "completed", "cancelled")


class Appended(Protocol):
    """What a log append returns (exchange.services.ledger.AppendedRecord)."""

    @property
    def index(self) -> int: ...

    @property
    def envelope(self) -> dict[str, Any]: ...


class Log(Protocol):
    """The transparency log as these services use it (exchange.services.ledger.LedgerService)."""

    async def append(self, session: AsyncSession, record_type: str, record_id: str, body: dict[str, Any]) -> Any: ...

    async def append_many(
        self, session: AsyncSession, records: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> Sequence[Appended]: ...

    async def append_signed(
        self, session: AsyncSession, record_type: str, record_id: str, envelope: dict[str, Any]
    ) -> Any: ...

    async def append_signed_many(
        self,
        session: AsyncSession,
        records: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        rows: Callable[[Sequence[Any]], Sequence[tuple[Table, list[dict[str, Any]]]]] | None = None,
    ) -> Sequence[Any]: ...

    def sign_records(
        self, records: Sequence[tuple[str, str, dict[str, Any]]], signer: tuple[str, SigningKey]
    ) -> list[SignedRecord]: ...

    async def append_presigned(
        self, session: AsyncSession, signed: Sequence[SignedRecord], key_id: str
    ) -> Sequence[Appended]: ...

    async def signer(self, session: AsyncSession) -> tuple[str, SigningKey]: ...


@dataclass(frozen=True)
class PoolFacts:
    """A pool as a contract on it records it."""

    model: str
    devices: int
    cri: str
    region: str
    provider_id: str


@dataclass(frozen=True)
class MatchFacts:
    """Pools by id, and (operator code, home region) of participants by id, for building contracts."""

    pools: dict[str, PoolFacts]
    parties: dict[str, tuple[str | None, str | None]]


class ContractNotFoundError(NotFoundError):
    """No contract with that id."""

    code = "contract_not_found"


class ContractStateError(ConflictError):
    """The contract's state does not allow this (already confirmed, ended, cancelled, ...)."""

    code = "contract_state"


def billable_end(row: Contract) -> int:
    """End of the billable span: the cancellation time if cancelled after start, else end_at."""
    if row.status == "cancelled" and row.cancelled_at is not None:
        return max(row.start_at, min(row.cancelled_at, row.end_at))
    return row.end_at


def contract_body(row: Contract) -> dict[str, Any]:
    """The contract's own fields of its signed record (create_from_match adds pool CRI, operator, buyer region)."""
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


def contract_view(row: Contract) -> dict[str, Any]:
    """JSON view of a contract for its parties."""
    view = contract_body(row)
    view.update(
        {
            "id": row.id,
            "status": row.status,
            "confirmed_at": row.confirmed_at,
            "cancelled_at": row.cancelled_at,
            "cancel_reason": row.cancel_reason,
            "billable_end": billable_end(row),
            "log_index": row.log_index,
        }
    )
    del view["contract_id"]
    return view


class ContractService:
    """Contract creation (for clearing rounds), reads, confirmation and cancellation."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ledger: Log,
        catalogue: Catalogue,
        tiers: Callable[[], TierTable],
        *,
        fee_bps: int,
        clock: Callable[[], int] = now_s,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.catalogue = catalogue
        self.tiers = tiers
        self.fee_bps = fee_bps
        self.clock = clock

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
        """Create one contract in the caller's transaction and append its signed record to the log.

        The caller (a clearing round) has already reserved capacity; this checks the pool belongs to the
        provider, the span and amounts are sane and the billing terms are valid for the mode. `billing_terms`
        may be the order's terms as given (period / tier_table / milestones without due dates): they are
        completed per specs/billing.md section 3 and the completed terms are what the contract signs.
        """
        facts = await self.match_facts(session, [pool_id], [provider_id, buyer_id])
        contract = self.build_from_match(
            facts,
            order_id=order_id,
            pool_id=pool_id,
            buyer_id=buyer_id,
            provider_id=provider_id,
            devices=devices,
            start_at=start_at,
            end_at=end_at,
            buyer_price_fen=buyer_price_fen,
            provider_price_fen=provider_price_fen,
            billing_mode=billing_mode,
            billing_terms=billing_terms,
            offer_id=offer_id,
            round_id=round_id,
            fee_bps=fee_bps,
        )
        await self.add_matched(session, [contract], facts)
        return contract

    async def match_facts(self, session: AsyncSession, pool_ids: Sequence[str], party_ids: Sequence[str]) -> MatchFacts:
        """What contracts on these pools between these parties need from the database (two queries)."""
        rows = await session.execute(
            select(Pool.id, Pool.model, Pool.devices, Pool.cri, Site.region, Site.provider_id)
            .join(Site, Site.id == Pool.site_id)
            .where(Pool.id.in_(sorted(set(pool_ids))))
        )
        pools = {r.id: PoolFacts(r.model, r.devices, r.cri, r.region, r.provider_id) for r in rows}
        parties = {
            r.id: (r.operator_code, r.home_region)
            for r in await session.execute(
                select(Participant.id, Participant.operator_code, Participant.home_region).where(
                    Participant.id.in_(sorted(set(party_ids)))
                )
            )
        }
        return MatchFacts(pools, parties)

    def build_from_match(
        self,
        facts: MatchFacts,
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
        """A validated contract row, not yet added (no I/O; raises a HetexError naming the field)."""
        if devices < 1:
            raise ValidationError("devices must be >= 1", field="devices")
        if end_at <= start_at:
            raise ValidationError("end_at must be after start_at", field="end_at")
        if buyer_price_fen < 0 or provider_price_fen < 0:
            raise ValidationError("prices must be >= 0", field="buyer_price_fen")
        pool = facts.pools.get(pool_id)
        if pool is None:
            raise ValidationError(f"pool {pool_id} does not exist", field="pool_id")
        if pool.provider_id != provider_id:
            raise ValidationError("the pool does not belong to the provider", field="provider_id")
        if devices > pool.devices:
            raise ValidationError("more devices than the pool has", field="devices")
        typed = contract_terms(
            billing_mode,
            billing_terms,
            start_at=start_at,
            end_at=end_at,
            buyer_price_fen=buyer_price_fen,
            model_scu=self.catalogue.get(pool.model).scu if pool.model in self.catalogue else None,
            tiers=self.tiers(),
        )
        return Contract(
            id=new_id_str(),
            round_id=round_id,
            order_id=order_id,
            pool_id=pool_id,
            offer_id=offer_id,
            buyer_id=buyer_id,
            provider_id=provider_id,
            model=pool.model,
            region=pool.region,
            devices=devices,
            start_at=start_at,
            end_at=end_at,
            buyer_price_fen=buyer_price_fen,
            provider_price_fen=provider_price_fen,
            fee_bps=self.fee_bps if fee_bps is None else fee_bps,
            billing_mode=billing_mode,
            billing_terms=terms_to_json(typed),
            status="pending",
            created_at=self.clock(),
        )

    async def add_matched(self, session: AsyncSession, contracts: Sequence[Contract], facts: MatchFacts) -> None:
        """Write built contracts and append their signed records at consecutive log indices (one batch)."""
        if not contracts:
            return
        signer = await self.ledger.signer(session)
        await self.write_matched(session, contracts, self.sign_matched(contracts, facts, signer), signer[0])

    def sign_matched(
        self, contracts: Sequence[Contract], facts: MatchFacts, signer: tuple[str, SigningKey]
    ) -> list[SignedRecord]:
        """The signed log records of built contracts (no I/O: a round signs them before its write transaction)."""
        records = []
        for contract in contracts:
            body = contract_body(contract)
            operator_code, _ = facts.parties.get(contract.provider_id, (None, None))
            _, home_region = facts.parties.get(contract.buyer_id, (None, None))
            body.update(  # facts regulators filter on (audit exports read them from the signed record)
                pool_cri=facts.pools[contract.pool_id].cri,
                operator_code=operator_code,
                buyer_home_region=home_region,
            )
            records.append(("contract", contract.id, body))
        return self.ledger.sign_records(records, signer)

    async def write_matched(
        self, session: AsyncSession, contracts: Sequence[Contract], signed: Sequence[SignedRecord], key_id: str
    ) -> None:
        """Append the contracts' records signed ahead by `key_id` (re-signed if the key rotated since) and
        insert the contract rows with their log indices: two Core batches, no ORM unit of work."""
        if not contracts:
            return
        appended = await self.ledger.append_presigned(session, signed, key_id)
        rows = []
        for contract, entry in zip(contracts, appended, strict=True):
            contract.log_index = entry.index
            rows.append({name: getattr(contract, name) for name in CONTRACT_COLUMNS})
        await session.execute(insert(Contract), rows)  # ORM bulk INSERT: no unit of work

    async def _load(self, session: AsyncSession, contract_id: str, *, lock: bool = False) -> Contract:
        stmt = select(Contract).where(Contract.id == contract_id)
        if lock:
            stmt = stmt.with_for_update()
        row = await session.scalar(stmt)
        if row is None:
            raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
        return row

    async def get(self, caller: Caller, contract_id: str) -> dict[str, Any]:
        """One contract, for its buyer or provider (or the operator/regulators)."""
        async with self.sessions() as session:
            row = await self._load(session, contract_id)
            require_party(caller, row.buyer_id, row.provider_id, read=True)
            return contract_view(row)

    async def list_for(
        self,
        caller: Caller,
        *,
        status: str | None = None,
        limit: int = 100,
        site: str | None = None,
        ending_after: int | None = None,
    ) -> list[dict[str, Any]]:
        """The caller's contracts (as buyer or provider), newest first; `site` (a site CRI) keeps those on the
        site's pools and `ending_after` those still running after that instant, so a node agent reads only
        what it meters instead of the provider's whole history."""
        if status is not None and status not in CONTRACT_STATUSES:
            raise ValidationError(f"status must be one of {CONTRACT_STATUSES}", field="status")
        stmt = select(Contract).where(or_(Contract.buyer_id == caller.id, Contract.provider_id == caller.id))
        if status is not None:
            stmt = stmt.where(Contract.status == status)
        if site is not None:
            cri = parse_cri(site)
            if cri.kind != "site":
                raise ValidationError("site: expected a site CRI, got a pool CRI", field="site")
            on_site = select(Pool.id).join(Site, Pool.site_id == Site.id).where(Site.cri == str(cri))
            stmt = stmt.where(Contract.pool_id.in_(on_site))
        if ending_after is not None:
            stmt = stmt.where(Contract.end_at > ending_after)
        stmt = stmt.order_by(Contract.created_at.desc(), Contract.id.desc()).limit(limit)
        async with self.sessions() as session:
            return [contract_view(r) for r in (await session.scalars(stmt)).all()]

    async def _event(self, session: AsyncSession, row: Contract, event: str, by: str, reason: str | None) -> None:
        body = {"contract_id": row.id, "event": event, "at": self.clock(), "by": by, "reason": reason}
        await self.ledger.append(session, "contract-event", row.id, body)

    async def confirm(self, caller: Caller, contract_id: str) -> dict[str, Any]:
        """The provider confirms the contract's start (pending -> confirmed), any time before end_at."""
        now = self.clock()
        async with self.sessions.begin() as session:
            row = await self._load(session, contract_id, lock=True)
            require_party(caller, row.provider_id, row.provider_id)
            if row.status != "pending":
                raise ContractStateError(f"contract is {row.status}, not pending", contract_status=row.status)
            if now >= row.end_at:
                raise ContractStateError("the contract has already ended", contract_status=row.status)
            row.status = "confirmed"
            row.confirmed_at = now
            await self._event(session, row, "confirmed", caller.id, None)
            return contract_view(row)

    async def cancel(self, caller: Caller, contract_id: str, reason: str) -> dict[str, Any]:
        """Buyer or provider cancels: free before start; after start the used part is settled (billing.md 4)."""
        now = self.clock()
        async with self.sessions.begin() as session:
            row = await self._load(session, contract_id, lock=True)
            require_party(caller, row.buyer_id, row.provider_id)
            if row.status not in ("pending", "confirmed"):
                raise ContractStateError(f"contract is {row.status}", contract_status=row.status)
            if now >= row.end_at:
                raise ContractStateError("the contract has already ended", contract_status=row.status)
            row.status = "cancelled"
            row.cancelled_at = now
            row.cancel_reason = reason[:200]
            await self._event(session, row, "cancelled", caller.id, row.cancel_reason)
            return contract_view(row)
