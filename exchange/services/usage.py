"""Usage reports: node-signed DSSE envelopes checked against the contract, flagged, stored and logged.

Rules (specs/billing.md section 5): duplicates are idempotent, a changed body under a used sequence number
is a conflict, gaps/overlaps/out-of-order reports are flagged, usage outside the contract is refused with
a reason. The report row and its log entry are written in one transaction; the contract row is locked
so concurrent reports for one contract serialize.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from sqlalchemy import Table, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.contracts import ContractNotFoundError, Log, billable_end
from exchange.services.nonces import NonceClaim, NonceStore
from exchange.services.parties import Caller, require_party
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.participants import Participant
from exchange.storage.settlement import UsageReport
from federation.canonical import canonical_bytes
from federation.dsse import record_payload_type, verify_envelope, verify_json_envelope
from federation.errors import EnvelopeError
from federation.keys import Keyring, VerifyKey
from identifiers.errors import ConflictError, HetexError, ValidationError
from identifiers.ids import new_id_str

USAGE_PAYLOAD_TYPE = record_payload_type("usage")
FUTURE_SKEW_SECONDS = 60


class UsageRefusedError(ValidationError):
    """A usage report that does not fit its contract; `reason` says which rule (specs/billing.md 5)."""

    code = "usage_refused"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class UsageConflictError(ConflictError):
    """The meter already reported this sequence number with a different body."""

    code = "usage_conflict"


class UsagePayload(pydantic.BaseModel):
    """The signed usage payload (RFC 8785 JSON); integers only."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    contract_id: str = pydantic.Field(min_length=1, max_length=36)
    meter_id: str = pydantic.Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/-]+$")
    seq: int = pydantic.Field(ge=1, le=2**53 - 1)
    period_start: int = pydantic.Field(ge=0, le=2**53 - 1)
    period_end: int = pydantic.Field(ge=0, le=2**53 - 1)
    device_minutes: int = pydantic.Field(ge=0, le=2**53 - 1)
    availability_bps: int = pydantic.Field(ge=0, le=10_000)


def usage_payload(**fields: Any) -> bytes:
    """Canonical payload bytes of a usage report (what the node signs)."""
    return canonical_bytes(parse_usage_payload(fields).model_dump())


def parse_usage_payload(obj: Any) -> UsagePayload:
    """Validate a decoded payload, naming the first bad field."""
    try:
        return UsagePayload.model_validate(obj)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "payload"
        message = f"payload.{field}: {first['msg']}"
        raise UsageRefusedError("invalid_payload", message, field=f"payload.{field}") from None


def usage_view(row: Any, *, duplicate: bool = False) -> dict[str, Any]:
    """JSON view of a stored usage report."""
    return {
        "id": row.id,
        "contract_id": row.contract_id,
        "meter_id": row.meter_id,
        "seq": row.seq,
        "period_start": row.period_start,
        "period_end": row.period_end,
        "device_minutes": row.device_minutes,
        "availability_bps": row.availability_bps,
        "status": "duplicate" if duplicate else row.status,
        "flags": list(row.flags or []),
        "log_index": row.log_index,
        "settlement_id": row.settlement_id,
        "envelope": json.loads(row.envelope),
        "created_at": row.created_at,
    }


def _only_verified_signatures(envelope: dict[str, Any], ring: Keyring) -> str:
    """The key id of the provider's key when every signature of `envelope` verifies under it; otherwise
    UsageRefusedError `unverified_signature` (a signature nobody can check is never stored nor named)."""
    for i, sig in enumerate(envelope["signatures"]):
        try:
            verify_envelope({**envelope, "signatures": [sig]}, ring, payload_type=USAGE_PAYLOAD_TYPE)
        except EnvelopeError:
            raise UsageRefusedError(
                "unverified_signature",
                f"signatures[{i}] does not verify against the provider's registered node key",
                field=f"signatures[{i}]",
            ) from None
    return ring.entries()[0].key_id  # the ring holds the provider's one key


BATCH_STATUSES = ("accepted", "duplicate", "refused")
#: Most reports one batch request may carry (a site's meters for one interval).
MAX_BATCH_REPORTS = 500


@dataclass
class _Checked:
    """A report that passed every rule: the row to store (duplicate=False) or the identical stored one (a
    UsageReport, or a row of usage_reports read by _meter_neighbours)."""

    row: Any
    envelope: dict[str, Any]
    duplicate: bool


def _peek_contract_id(envelope: Any) -> str | None:
    """The contract_id the (not yet verified) payload names, to lock contracts before checking; None when
    the payload is not decodable JSON naming one (the report is then refused)."""
    try:
        text = envelope["payload"].replace("-", "+").replace("_", "/")  # DSSE: standard or URL-safe base64
        payload = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
        cid = payload["contract_id"]
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 36 else None


def _batch_item(index: int, row: Any, status: str) -> dict[str, Any]:
    """One result of a batch: the stored report's identity and flags, without its envelope."""
    return {
        "index": index,
        "status": status,
        "id": row.id,
        "contract_id": row.contract_id,
        "meter_id": row.meter_id,
        "seq": row.seq,
        "flags": list(row.flags or []),
        "log_index": row.log_index,
    }


_USAGE: Table = UsageReport.__table__  # type: ignore[assignment]


def _neighbours_query() -> Any:
    c = _USAGE.c
    same_meter = (c.contract_id == bindparam("n_contract"), c.meter_id == bindparam("n_meter"))
    previous = select(func.max(c.seq)).where(*same_meter, c.seq < bindparam("n_seq"))
    overlaps = and_(c.period_start < bindparam("n_end"), c.period_end > bindparam("n_start"))
    return select(_USAGE).where(
        *same_meter, or_(c.seq >= bindparam("n_seq"), c.seq == previous.scalar_subquery(), overlaps)
    )


_NEIGHBOURS = _neighbours_query()  # built once, Core rows (no ORM objects): only its parameters change per report


async def _meter_neighbours(session: AsyncSession, contract_id: str, p: UsagePayload) -> list[Any]:
    """The stored reports of p's meter that its checks look at, in one query: the same or a later seq, the
    previous seq, and any whose period overlaps p's (in-order reporting: usually just the previous one). Rows
    with the columns of usage_reports as attributes, like a UsageReport."""
    params = {
        "n_contract": contract_id,
        "n_meter": p.meter_id,
        "n_seq": p.seq,
        "n_start": p.period_start,
        "n_end": p.period_end,
    }
    return list((await session.execute(_NEIGHBOURS, params)).all())


def _flags(neighbours: list[Any], p: UsagePayload) -> list[str]:
    """gap / overlap / out_of_order against the same meter's other reports (stored or earlier in the batch)."""
    earlier = [r for r in neighbours if r.seq < p.seq]
    prev = max(earlier, key=lambda r: r.seq) if earlier else None
    flags: list[str] = []
    if p.seq > 1 if prev is None else (p.seq != prev.seq + 1 or prev.period_end < p.period_start):
        flags.append("gap")
    if any(r.period_start < p.period_end and r.period_end > p.period_start for r in neighbours):
        flags.append("overlap")
    if any(r.seq > p.seq for r in neighbours):
        flags.append("out_of_order")
    return flags


@dataclass
class _BatchState:
    """What a batch's checks share: provider keyrings, each contract's stored usage (read once), and the reports
    accepted so far (not yet written: later reports are checked against them as if stored)."""

    rings: dict[str, Keyring] = field(default_factory=dict)
    _stored_minutes: dict[str, int] = field(default_factory=dict)
    _accepted: dict[tuple[str, str], list[UsageReport]] = field(default_factory=dict)

    def meter(self, contract_id: str, p: UsagePayload) -> list[UsageReport]:
        """Reports of p's meter accepted earlier in this batch."""
        return self._accepted.get((contract_id, p.meter_id), [])

    async def used(self, session: AsyncSession, contract_id: str) -> int:
        """Device-minutes reported on the contract: stored plus accepted earlier in this batch."""
        stored = self._stored_minutes.get(contract_id)
        if stored is None:
            total = await session.scalar(
                select(func.coalesce(func.sum(UsageReport.device_minutes), 0)).where(
                    UsageReport.contract_id == contract_id
                )
            )
            stored = self._stored_minutes[contract_id] = int(total or 0)
        pending = sum(
            r.device_minutes for (cid, _m), rows in self._accepted.items() if cid == contract_id for r in rows
        )
        return stored + pending

    def accept(self, row: UsageReport) -> None:
        """Count a checked report as stored for the batch's later checks."""
        self._accepted.setdefault((row.contract_id, row.meter_id), []).append(row)


class UsageService:
    """Accepts node-signed usage for contracts and lists it back to the parties."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ledger: Log,
        *,
        clock: Callable[[], int] = now_s,
        nonces: NonceStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.nonce_store = nonces or NonceStore()
        self.ledger = ledger
        self.clock = clock
        #: Hook run in the transaction after a record is logged (contract id, record type, id, envelope).
        self.on_logged: Callable[[AsyncSession, str, str, str, dict[str, Any]], Awaitable[Any]] | None = None

    async def _provider_keyring(self, session: AsyncSession, provider_id: str) -> Keyring:
        provider = await session.get(Participant, provider_id)
        ring = Keyring()
        if provider is not None and provider.status == "active":
            ring.add(provider.key_id, VerifyKey.from_base64(provider.public_key), owner=provider.id)
        return ring

    async def report(self, caller: Caller, contract_id: str, envelope: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store one usage report; returns (view, created). created=False: an identical earlier report."""
        async with self.sessions.begin() as session:
            contract = await session.scalar(select(Contract).where(Contract.id == contract_id).with_for_update())
            if contract is None:
                raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
            checked = await self._check(session, caller, contract, envelope, _BatchState())
            if checked.duplicate:
                return usage_view(checked.row, duplicate=True), False
            await self._write(session, [checked])
            return usage_view(checked.row), True

    async def report_batch(
        self, caller: Caller, envelopes: list[dict[str, Any]], nonce: NonceClaim | None = None
    ) -> dict[str, Any]:
        """Store many node-signed usage reports (any contracts and meters of the caller) in ONE transaction,
        in the order sent, each checked exactly as a single report; the answer has one result per report.

        Per-report outcome, not all-or-nothing (specs/billing.md 5.1): a refused report (wrong contract,
        bad signature, conflict, outside the contract...) writes nothing and is answered with its error code;
        the others commit together. Reports of one meter are checked in order, so a batch may carry a
        meter's seq n and n+1. The contracts are locked in id order first (two concurrent batches never
        deadlock); `nonce` is remembered in the same transaction."""
        peeked = [_peek_contract_id(envelope) for envelope in envelopes]
        outcomes: list[tuple[int, str, Any]] = []  # (index, status, the report's row, or the refusal)
        async with self.sessions.begin() as session:
            if nonce is not None:
                await self.nonce_store.remember(session, nonce)
            wanted = sorted({cid for cid in peeked if cid is not None})
            contracts: dict[str, Contract] = {}
            if wanted:
                rows = await session.scalars(
                    select(Contract).where(Contract.id.in_(wanted)).order_by(Contract.id).with_for_update()
                )
                contracts = {c.id: c for c in rows.all()}
            state = _BatchState()
            accepted: list[_Checked] = []
            for index, (envelope, contract_id) in enumerate(zip(envelopes, peeked, strict=True)):
                try:
                    contract = contracts.get(contract_id) if contract_id is not None else None
                    if contract is None:
                        if contract_id is None:
                            raise UsageRefusedError("bad_envelope", "the payload names no contract_id")
                        raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
                    checked = await self._check(session, caller, contract, envelope, state)
                except HetexError as exc:
                    outcomes.append((index, "refused", {"contract_id": contract_id, "error": exc.to_dict()}))
                    continue
                if checked.duplicate:
                    outcomes.append((index, "duplicate", checked.row))
                else:
                    state.accept(checked.row)
                    accepted.append(checked)
                    outcomes.append((index, "accepted", checked.row))
            await self._write(session, accepted)  # one log append and one INSERT for every accepted report
        if nonce is not None:
            nonce.remembered = True
        results = [
            {"index": i, "status": status, **outcome} if status == "refused" else _batch_item(i, outcome, status)
            for i, status, outcome in outcomes
        ]
        counts = {status: sum(1 for r in results if r["status"] == status) for status in BATCH_STATUSES}
        return {"results": results, **counts}

    async def _check(
        self,
        session: AsyncSession,
        caller: Caller,
        contract: Contract,
        envelope: dict[str, Any],
        state: _BatchState,
    ) -> _Checked:
        """Every rule of a usage report against its (locked) contract, writing nothing: the new row to
        store (not yet added), or the identical stored report (a duplicate). Raises the refusal. `state` carries
        what earlier reports of the same batch accepted (checked as if already stored) and per-batch reads."""
        require_party(caller, contract.provider_id, contract.provider_id)
        ring = state.rings.get(contract.provider_id)
        if ring is None:
            ring = state.rings[contract.provider_id] = await self._provider_keyring(session, contract.provider_id)
        try:
            obj = verify_json_envelope(envelope, ring, payload_type=USAGE_PAYLOAD_TYPE)
        except EnvelopeError as exc:
            if exc.reason == "unknown_key":
                raise UsageRefusedError(
                    "wrong_provider", "the usage is not signed by the provider that owns the contract's pool"
                ) from None
            raise UsageRefusedError("bad_envelope", f"usage envelope refused: {exc.message}") from None
        signer = _only_verified_signatures(envelope, ring)
        payload = parse_usage_payload(obj)
        payload_bytes = canonical_bytes(obj)
        digest = hashlib.sha256(payload_bytes).hexdigest()
        if payload.contract_id != contract.id:
            raise UsageRefusedError("contract_mismatch", "the payload names another contract")
        # the meter's stored reports these rules look at, in one query, plus the batch's own accepted ones
        neighbours = [*await _meter_neighbours(session, contract.id, payload), *state.meter(contract.id, payload)]
        existing = next((r for r in neighbours if r.seq == payload.seq), None)
        if existing is not None:
            if existing.payload_sha256 == digest:
                return _Checked(existing, envelope, duplicate=True)
            raise UsageConflictError(
                f"meter {payload.meter_id} already reported seq {payload.seq} with a different body",
                existing_id=existing.id,
            )
        self._check_fits(contract, payload, self.clock())
        used = await state.used(session, contract.id)
        capacity = contract.devices * (billable_end(contract) - contract.start_at) // 60
        if used + payload.device_minutes > capacity:
            raise UsageRefusedError(
                "exceeds_contract_capacity",
                f"the contract's reported usage would exceed its {capacity} device-minutes",
                capacity_device_minutes=capacity,
                reported_device_minutes=used,
            )
        row = UsageReport(
            id=new_id_str(),
            contract_id=contract.id,
            meter_id=payload.meter_id,
            seq=payload.seq,
            period_start=payload.period_start,
            period_end=payload.period_end,
            device_minutes=payload.device_minutes,
            availability_bps=payload.availability_bps,
            payload_sha256=digest,
            envelope="",
            signer_key_id=signer,
            status="accepted",
            flags=_flags(neighbours, payload),
            created_at=self.clock(),
        )
        return _Checked(row, envelope, duplicate=False)

    async def _write(self, session: AsyncSession, checked: list[_Checked]) -> None:
        """Append checked reports to the log in order (one append) and store them (same transaction)."""
        if not checked:
            return
        appended = await self.ledger.append_signed_many(session, [("usage", c.row.id, c.envelope) for c in checked])
        for c, logged in zip(checked, appended, strict=True):
            c.row.envelope = canonical_bytes(logged.envelope).decode("utf-8")
            c.row.log_index = logged.index
            if self.on_logged is not None:  # federation: mirror to the buyer's exchange (outbox, same transaction)
                await self.on_logged(session, c.row.contract_id, "usage", c.row.id, logged.envelope)
        session.add_all([c.row for c in checked])
        await session.flush()

    def _check_fits(self, contract: Contract, p: UsagePayload, now: int) -> None:
        """Refuse usage outside the contract: unconfirmed, outside the billable span, future, too many minutes."""
        if contract.confirmed_at is None:
            raise UsageRefusedError("not_confirmed", "the provider has not confirmed this contract")
        if p.period_end <= p.period_start:
            raise UsageRefusedError("empty_period", "period_end must be after period_start")
        end = billable_end(contract)
        if p.period_start < contract.start_at or p.period_end > end:
            raise UsageRefusedError(
                "outside_contract",
                f"period [{p.period_start}, {p.period_end}) is outside the contract [{contract.start_at}, {end})",
                contract_start=contract.start_at,
                contract_end=end,
            )
        if p.period_end > now + FUTURE_SKEW_SECONDS:
            raise UsageRefusedError("in_future", "the period has not ended yet", now=now)
        if p.device_minutes * 60 > contract.devices * (p.period_end - p.period_start):
            raise UsageRefusedError(
                "too_many_device_minutes",
                f"{p.device_minutes} device-minutes exceed {contract.devices} devices x the period",
                max_device_minutes=contract.devices * (p.period_end - p.period_start) // 60,
            )

    async def list_for(self, caller: Caller, contract_id: str) -> list[dict[str, Any]]:
        """Every usage report of a contract (flags visible), by meter and sequence number."""
        async with self.sessions() as session:
            contract = await session.get(Contract, contract_id)
            if contract is None:
                raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
            require_party(caller, contract.buyer_id, contract.provider_id, read=True)
            rows = await session.scalars(
                select(UsageReport)
                .where(UsageReport.contract_id == contract_id)
                .order_by(UsageReport.meter_id, UsageReport.seq)
            )
            return [usage_view(r) for r in rows.all()]
