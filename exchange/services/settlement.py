"""Settlement: price every due contract period with the pure billing functions, in one batch transaction.

A run (`run(as_of)`) finds confirmed contracts with periods that ended by `as_of`, or with usage not yet
settled, computes each period's amount and postings, and writes a settlement record per period that is
new or whose figures changed (a correction: a new record with `supersedes_id`). Every record is signed
and appended to the transparency log. The whole batch - rows, log entries, usage links and contract
status changes - is one transaction: it commits completely or not at all.

Test hook: HETEX_TEST_CRASH_AFTER=N makes the batch `os._exit(86)` right after its N-th record, inside
the open transaction (specs/billing.md section 6). Never set it in production.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.billing.compute_tier import TierTable
from exchange.billing.postings import postings_for
from exchange.billing.terms import ContractFacts, Period, parse_terms, period_amount, plan_periods
from exchange.services.contracts import ContractNotFoundError, Log, billable_end
from exchange.services.parties import READ_ALL_ROLES, Caller, require_operator, require_party
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.settlement import SettlementBatch, SettlementRecord, UsageReport
from federation.canonical import canonical_bytes
from identifiers.errors import NotFoundError, ValidationError
from identifiers.ids import new_id_str

CRASH_ENV = "HETEX_TEST_CRASH_AFTER"
CRASH_EXIT_CODE = 86
ADVISORY_LOCK_KEY = 0x6865_7865_5345_5454  # "hexeSETT": one settlement run at a time on PostgreSQL
SETTLEABLE = ("confirmed", "cancelled", "completed")


class SettlementNotFoundError(NotFoundError):
    """No settlement record with that id."""

    code = "settlement_not_found"


@dataclass(frozen=True)
class BatchResult:
    """What a run wrote: the batch id (None when nothing was due) and the records."""

    batch_id: str | None
    as_of: int
    records: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"batch_id": self.batch_id, "as_of": self.as_of, "count": len(self.records), "records": self.records}


def settlement_body(row: SettlementRecord) -> dict[str, Any]:
    """The signed settlement record (what the log holds)."""
    return {
        "settlement_id": row.id,
        "contract_id": row.contract_id,
        "batch_id": row.batch_id,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "revision": row.revision,
        "billing_mode": row.billing_mode,
        "device_minutes": row.device_minutes,
        "buyer_debit_fen": row.buyer_debit_fen,
        "provider_credit_fen": row.provider_credit_fen,
        "fee_fen": row.fee_fen,
        "usage_ids": list(row.usage_ids),
        "detail": row.detail,
        "supersedes_id": row.supersedes_id,
        "created_at": row.created_at,
    }


def superseded_amounts(row: SettlementRecord) -> dict[str, int]:
    """The figures of a record being corrected, carried in the correction's signed detail."""
    return {
        "buyer_debit_fen": row.buyer_debit_fen,
        "provider_credit_fen": row.provider_credit_fen,
        "fee_fen": row.fee_fen,
        "device_minutes": row.device_minutes,
    }


def settlement_view(row: SettlementRecord) -> dict[str, Any]:
    """JSON view of a settlement record with its log index and signed envelope."""
    view = settlement_body(row)
    view["id"] = view.pop("settlement_id")
    view["log_index"] = row.log_index
    view["envelope"] = json.loads(row.envelope) if row.envelope else None
    return view


def _crash_after() -> int | None:
    raw = os.environ.get(CRASH_ENV)
    return int(raw) if raw else None


class SettlementService:
    """Runs settlement batches and serves settlement records to contract parties."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ledger: Log,
        tiers: Callable[[], TierTable],
        *,
        clock: Callable[[], int] = now_s,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.tiers = tiers
        self.clock = clock
        #: Hook run in the transaction after a record is logged (contract id, record type, id, envelope).
        self.on_logged: Callable[[AsyncSession, str, str, str, dict[str, Any]], Awaitable[Any]] | None = None

    async def run(self, caller: Caller | None = None, *, as_of: int | None = None) -> BatchResult:
        """Settle everything due by `as_of` (default now; never later than now) in one transaction."""
        require_operator(caller)
        now = self.clock()
        as_of = now if as_of is None else as_of
        if as_of > now:
            raise ValidationError("as_of must not be in the future", field="as_of")
        crash_after = _crash_after()
        async with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            batch = SettlementBatch(id=new_id_str(), as_of=as_of, records=0, created_at=now)
            written: list[SettlementRecord] = []
            for contract in await self._candidates(session, as_of):
                for row in await self._settle_contract(session, contract, batch, as_of, now):
                    if not written:
                        session.add(batch)
                        await session.flush()
                    row.batch_id = batch.id
                    appended = await self.ledger.append(session, "settlement", row.id, settlement_body(row))
                    row.log_index = appended.index
                    row.envelope = canonical_bytes(appended.envelope).decode("utf-8")
                    session.add(row)  # inserted once, complete: settlement rows are never updated
                    await session.flush()
                    if self.on_logged is not None:  # federation: mirror to the buyer's exchange (outbox)
                        await self.on_logged(session, contract.id, "settlement", row.id, appended.envelope)
                    await session.execute(
                        update(UsageReport).where(UsageReport.id.in_(row.usage_ids)).values(settlement_id=row.id)
                    )
                    written.append(row)
                    if crash_after is not None and len(written) >= crash_after:
                        await session.flush()
                        os._exit(CRASH_EXIT_CODE)  # test hook: die inside the open transaction
            if not written:
                return BatchResult(None, as_of, [])
            batch.records = len(written)
            batch.first_log_index = written[0].log_index
            batch.last_log_index = written[-1].log_index
            await session.flush()
            return BatchResult(batch.id, as_of, [settlement_view(r) for r in written])

    async def _candidates(self, session: AsyncSession, as_of: int) -> Sequence[Contract]:
        """Confirmed contracts that started by `as_of` and are not completed, plus any with unsettled usage."""
        unsettled = select(UsageReport.contract_id).where(UsageReport.settlement_id.is_(None))
        stmt = (
            select(Contract)
            .where(
                Contract.confirmed_at.is_not(None),
                Contract.start_at < as_of,
                Contract.status.in_(SETTLEABLE),
                or_(Contract.status != "completed", Contract.id.in_(unsettled)),
            )
            .order_by(Contract.start_at, Contract.id)
        )
        return (await session.scalars(stmt)).all()

    async def _settle_contract(
        self, session: AsyncSession, contract: Contract, batch: SettlementBatch, as_of: int, now: int
    ) -> list[SettlementRecord]:
        """New or correcting records for every period of `contract` that ended by `as_of`."""
        end = billable_end(contract)
        terms = parse_terms(contract.billing_mode, contract.billing_terms, start_at=contract.start_at, end_at=end)
        periods = plan_periods(terms, contract.start_at, end)
        usage = (
            await session.scalars(
                select(UsageReport)
                .where(UsageReport.contract_id == contract.id, UsageReport.status == "accepted")
                .order_by(UsageReport.period_start, UsageReport.meter_id, UsageReport.seq)
            )
        ).all()
        latest = await self._latest_records(session, contract.id)
        ladder = self.tiers().ladder if contract.billing_mode == "compute_tier" else ()
        facts = ContractFacts(devices=contract.devices, buyer_price_fen=contract.buyer_price_fen)
        out: list[SettlementRecord] = []
        prior_minutes = 0
        all_settled = True
        for period in periods:
            in_period = [u for u in usage if _belongs(u, period, periods)]
            minutes = sum(u.device_minutes for u in in_period)
            if period.end > as_of:
                all_settled = False
                prior_minutes += minutes
                continue
            amount, detail = period_amount(
                terms, facts, period, device_minutes=minutes, prior_device_minutes=prior_minutes, ladder=ladder
            )
            prior_minutes += minutes
            postings = postings_for(amount, contract.fee_bps)
            usage_ids = sorted(u.id for u in in_period)
            previous = latest.get(period.start)
            if previous is not None and _same(previous, usage_ids, postings.buyer_debit_fen, postings.fee_fen):
                continue
            if previous is not None:
                # A correction restates the whole period; naming what it replaces lets totals net it out.
                detail = {**detail, "superseded": superseded_amounts(previous)}
            out.append(
                SettlementRecord(
                    id=new_id_str(),
                    contract_id=contract.id,
                    batch_id=batch.id,
                    period_start=period.start,
                    period_end=period.end,
                    revision=1 if previous is None else previous.revision + 1,
                    billing_mode=contract.billing_mode,
                    device_minutes=minutes,
                    buyer_debit_fen=postings.buyer_debit_fen,
                    provider_credit_fen=postings.provider_credit_fen,
                    fee_fen=postings.fee_fen,
                    usage_ids=usage_ids,
                    detail=detail,
                    supersedes_id=None if previous is None else previous.id,
                    envelope="",
                    created_at=now,
                )
            )
        if all_settled and end <= as_of and contract.status == "confirmed":
            contract.status = "completed"
        return out

    async def _latest_records(self, session: AsyncSession, contract_id: str) -> dict[int, SettlementRecord]:
        """The latest revision of each period's record, by period start."""
        rows = await session.scalars(
            select(SettlementRecord)
            .where(SettlementRecord.contract_id == contract_id)
            .order_by(SettlementRecord.period_start, SettlementRecord.revision)
        )
        return {r.period_start: r for r in rows.all()}

    async def list_for(
        self, caller: Caller, *, contract_id: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Settlement records of one contract (its parties) or, for operator/regulators, of all contracts."""
        async with self.sessions() as session:
            stmt = select(SettlementRecord)
            if contract_id is not None:
                contract = await session.get(Contract, contract_id)
                if contract is None:
                    raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
                require_party(caller, contract.buyer_id, contract.provider_id, read=True)
                stmt = stmt.where(SettlementRecord.contract_id == contract_id)
            elif caller.role not in READ_ALL_ROLES:
                mine = select(Contract.id).where(or_(Contract.buyer_id == caller.id, Contract.provider_id == caller.id))
                stmt = stmt.where(SettlementRecord.contract_id.in_(mine))
            stmt = stmt.order_by(
                SettlementRecord.contract_id, SettlementRecord.period_start, SettlementRecord.revision
            ).limit(limit)
            return [settlement_view(r) for r in (await session.scalars(stmt)).all()]

    async def get(self, caller: Caller, settlement_id: str) -> dict[str, Any]:
        """One settlement record, for the contract's parties (or operator/regulators)."""
        async with self.sessions() as session:
            row = await session.get(SettlementRecord, settlement_id)
            if row is None:
                raise SettlementNotFoundError(f"settlement {settlement_id} not found", field="settlement_id")
            contract = await session.get(Contract, row.contract_id)
            assert contract is not None
            require_party(caller, contract.buyer_id, contract.provider_id, read=True)
            return settlement_view(row)

    async def count_batches(self) -> int:
        """Number of committed settlement batches (tests and metrics)."""
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(SettlementBatch)) or 0)


def _belongs(usage: UsageReport, period: Period, periods: Sequence[Period]) -> bool:
    """A report belongs to the period containing its start (project/subscription: same rule, no effect on price)."""
    if period.start <= usage.period_start < period.end:
        return True
    # usage starting before the first planned period can only happen for project contracts' first milestone
    return period is periods[0] and usage.period_start < period.start


def _same(previous: SettlementRecord, usage_ids: list[str], debit: int, fee: int) -> bool:
    return sorted(previous.usage_ids) == usage_ids and previous.buyer_debit_fen == debit and previous.fee_fen == fee
