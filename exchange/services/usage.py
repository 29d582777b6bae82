"""Usage reports: node-signed DSSE envelopes checked against the contract, flagged, stored and logged.

Rules (specs/billing.md section 5): duplicates are idempotent, a changed body under a used sequence number
is a conflict, gaps/overlaps/out-of-order reports are flagged, usage outside the contract is refused with
a reason. The report row and its log entry are written in one transaction; the contract row is locked
so concurrent reports for one contract serialize.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
from sqlalchemy import Integer, Table, and_, bindparam, cast, func, literal_column, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.services.canonical import fast_canonical_bytes
from exchange.services.contracts import ContractNotFoundError, Log, billable_end
from exchange.services.nonces import NonceClaim, NonceStore
from exchange.services.parties import Caller, require_party
from exchange.services.principals import Principal
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
    UsageRefusedError `unverified_signature` (a signature nobody can check is never stored nor named). Called after
    verify_envelope accepted `envelope` under `ring`: a lone signature is then the one that verified, and is not
    verified a second time."""
    signatures = envelope["signatures"]
    for i, sig in enumerate(signatures if len(signatures) > 1 else []):
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
_SUM_COLUMNS = ("contract_id", "device_minutes")


@functools.lru_cache(maxsize=256)
def _reads_statement(reports: int, contracts: int) -> Any:
    """ONE statement for everything a batch's rules read (after the contracts are locked): for report k (tagged
    k; parameters r<k>_contract, _meter, _seq, _start, _end) the stored reports of its meter that its checks look
    at (the same or a later seq, the previous seq, and any whose period overlaps: in-order reporting gives just
    the previous one), and for contract j (tagged -1-j; parameter c<j>) one row whose device_minutes is the
    contract's stored usage. Rows have the columns of usage_reports. Built once per (reports, contracts) count, so
    SQLAlchemy's compiled form is found by the statement's memoized cache key."""
    c = _USAGE.c
    branches: list[Any] = []
    for k in range(reports):
        same_meter = (c.contract_id == bindparam(f"r{k}_contract"), c.meter_id == bindparam(f"r{k}_meter"))
        seq = bindparam(f"r{k}_seq", type_=c.seq.type)
        previous = select(func.max(c.seq)).where(*same_meter, c.seq < seq).scalar_subquery()
        overlaps = and_(
            c.period_start < bindparam(f"r{k}_end", type_=c.period_start.type),
            c.period_end > bindparam(f"r{k}_start", type_=c.period_end.type),
        )
        branches.append(
            select(literal_column(str(k), Integer).label("k"), *c).where(
                *same_meter, or_(c.seq >= seq, c.seq == previous, overlaps)
            )
        )
    for j in range(contracts):
        columns = [
            c.contract_id
            if col.name == "contract_id"
            else func.coalesce(func.sum(c.device_minutes), 0).label("device_minutes")
            if col.name == "device_minutes"
            else cast(null(), col.type).label(col.name)
            for col in c
        ]
        tag = literal_column(str(-1 - j), Integer).label("k")
        branches.append(select(tag, *columns).where(c.contract_id == bindparam(f"c{j}")).group_by(c.contract_id))
    return branches[0] if len(branches) == 1 else union_all(*branches)


def _reads_params(reports: list[tuple[str, UsagePayload]], contract_ids: list[str]) -> dict[str, Any]:
    """The parameters of _reads_statement for these reports and contracts."""
    params: dict[str, Any] = {f"c{j}": cid for j, cid in enumerate(contract_ids)}
    for k, (cid, p) in enumerate(reports):
        params.update(
            {
                f"r{k}_contract": cid,
                f"r{k}_meter": p.meter_id,
                f"r{k}_seq": p.seq,
                f"r{k}_start": p.period_start,
                f"r{k}_end": p.period_end,
            }
        )
    return params


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
    """What a batch's checks share: provider keyrings, what one read returned (each report's stored neighbours,
    each contract's stored usage), and the reports accepted so far (not yet written: later reports are checked
    against them as if stored)."""

    rings: dict[str, Keyring] = field(default_factory=dict)
    _neighbours: dict[int, list[Any]] = field(default_factory=dict)
    _stored_minutes: dict[str, int] = field(default_factory=dict)
    _accepted: dict[tuple[str, str], list[UsageReport]] = field(default_factory=dict)

    async def read(self, session: AsyncSession, reports: list[tuple[int, str, UsagePayload]]) -> None:
        """Read, in one statement, the stored neighbours of every (key, contract id, payload) and the stored
        usage of their contracts."""
        if not reports:
            return
        contract_ids = sorted({cid for _k, cid, _p in reports})
        pairs = [(cid, p) for _k, cid, p in reports]
        stmt = _reads_statement(len(pairs), len(contract_ids))
        for row in (await session.execute(stmt, _reads_params(pairs, contract_ids))).all():
            if row.k >= 0:
                self._neighbours.setdefault(reports[row.k][0], []).append(row)
            else:
                self._stored_minutes[contract_ids[-1 - row.k]] = int(row.device_minutes or 0)

    def stored(self, key: int) -> list[Any]:
        """The stored neighbours read for report `key`."""
        return self._neighbours.get(key, [])

    def meter(self, contract_id: str, p: UsagePayload) -> list[UsageReport]:
        """Reports of p's meter accepted earlier in this batch."""
        return self._accepted.get((contract_id, p.meter_id), [])

    def used(self, contract_id: str) -> int:
        """Device-minutes reported on the contract: stored plus accepted earlier in this batch."""
        pending = sum(
            r.device_minutes for (cid, _m), rows in self._accepted.items() if cid == contract_id for r in rows
        )
        return self._stored_minutes.get(contract_id, 0) + pending

    def accept(self, row: UsageReport) -> None:
        """Count a checked report as stored for the batch's later checks."""
        self._accepted.setdefault((row.contract_id, row.meter_id), []).append(row)


@dataclass(frozen=True)
class _Verified:
    """A report whose envelope verified under its contract's provider key: the payload and its bytes."""

    contract: Contract
    envelope: dict[str, Any]
    payload: UsagePayload
    digest: str
    signer: str


LEAD, ALONE, DONE = "lead", "alone", "done"


@dataclass
class _Waiting:
    """A batch whose checked reports wait for a leader: its reports and how it learns the outcome."""

    checked: list[_Checked]
    outcome: asyncio.Future[str]


@dataclass
class GroupAppender:
    """Group append of usage batches in one process (PostgreSQL, sessions bound to an engine).

    Every log append holds the single log counter row lock until its transaction commits, so batches that append
    one by one form a convoy: each waits for the holder's round trips, and under load for the holder's event loop.
    Here a batch that has its accepted reports while another batch of this process is appending waits instead
    (its transaction stays open, holding its contracts' locks and its nonce); the next leader writes the reports
    of every batch waiting, with its own, in ITS transaction (one counter lock, one statement), commits, and only
    then lets them commit (their nonces). So one lock hold serves every batch that arrived during the previous one.

    A batch's reports are checked under its own contract locks and stay under them until the leader committed
    them, so the sequence and capacity rules hold as when each batch appends alone. If the leader's transaction
    fails, every batch of its group appends its own reports alone, in its own transaction: one failing batch
    does not take the others' reports with it. Waits cannot cycle: a leader waits only for the counter lock (whose
    holders wait for nothing in this process) and for KEY SHARE on its group's contracts, which the batches'
    FOR NO KEY UPDATE does not block."""

    enabled: bool
    write: Callable[[AsyncSession, list[_Checked]], Awaitable[None]]
    _leading: bool = False
    _queue: list[_Waiting] = field(default_factory=list)
    #: groups a leader wrote, and the batches in them (its own included)
    groups: int = 0
    batches: int = 0

    async def append(self, session: AsyncSession, checked: list[_Checked]) -> None:
        """Append `checked` in this transaction, or have a leader append them (with its own) in its transaction."""
        if not checked:
            return
        role = LEAD
        if not self.enabled:
            role = ALONE
        elif self._leading:
            waiting = _Waiting(checked, asyncio.get_running_loop().create_future())
            self._queue.append(waiting)
            try:
                role = await waiting.outcome
            except asyncio.CancelledError:
                if waiting in self._queue:  # not taken by a leader yet
                    self._queue.remove(waiting)
                elif waiting.outcome.done() and not waiting.outcome.cancelled() and waiting.outcome.result() == LEAD:
                    self._hand_on()  # made leader as it was cancelled: the lead passes on
                raise
        else:
            self._leading = True
        if role == DONE:
            return
        if role == ALONE:
            await self.write(session, checked)
            return
        group, self._queue = self._queue, []
        session.info[_LED_GROUP] = group
        await self.write(session, [c for batch in [checked, *(w.checked for w in group)] for c in batch])
        self.groups += 1
        self.batches += 1 + len(group)

    def finished(self, session: AsyncSession, committed: bool) -> None:
        """After a transaction that used append(): a leader tells its group whether their reports are committed
        (done) or not (each appends alone), and hands the lead to the next waiting batch."""
        group: list[_Waiting] | None = session.info.pop(_LED_GROUP, None)
        if group is None:
            return
        for waiting in group:
            if not waiting.outcome.done():
                waiting.outcome.set_result(DONE if committed else ALONE)
        self._hand_on()

    def _hand_on(self) -> None:
        """The lead passes to the first waiting batch (it writes those waiting by then), or nobody leads."""
        while self._queue:
            nxt = self._queue.pop(0)
            if not nxt.outcome.done():
                nxt.outcome.set_result(LEAD)
                return
        self._leading = False


_LED_GROUP = "hetex_usage_led_group"


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
        bind = sessions.kw.get("bind")
        grouped = isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql"
        #: group append of concurrent batches (PostgreSQL): see GroupAppender
        self.appends = GroupAppender(grouped, self._write)
        #: Hook run in the transaction before records of these contracts are logged (its reads, outside the lock).
        self.before_logged: Callable[[AsyncSession, list[str]], Awaitable[Any]] | None = None
        #: Hook run in the transaction after a record is logged (contract id, record type, id, envelope).
        self.on_logged: Callable[[AsyncSession, str, str, str, dict[str, Any]], Awaitable[Any]] | None = None

    async def _provider_keyring(self, session: AsyncSession, caller: Caller, provider_id: str) -> Keyring:
        """The provider's registered key: the caller's own when the caller is that provider (authenticated with
        it for this very request, from the key cache every participant change drops), else read."""
        ring = Keyring()
        if isinstance(caller, Principal) and caller.id == provider_id:
            if caller.status == "active":
                ring.add(caller.key_id, VerifyKey.from_base64(caller.public_key), owner=caller.id)
            return ring
        provider = await session.get(Participant, provider_id)
        if provider is not None and provider.status == "active":
            ring.add(provider.key_id, VerifyKey.from_base64(provider.public_key), owner=provider.id)
        return ring

    async def report(self, caller: Caller, contract_id: str, envelope: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store one usage report; returns (view, created). created=False: an identical earlier report."""
        async with self.sessions.begin() as session:
            contract = await session.scalar(select(Contract).where(Contract.id == contract_id).with_for_update())
            if contract is None:
                raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
            state = _BatchState()
            verified = await self._verify(session, caller, contract, envelope, state)
            await state.read(session, [(0, contract.id, verified.payload)])
            checked = self._rules(verified, state.stored(0), state)
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
        deadlock); `nonce` is remembered in the same transaction. Round trips: the envelopes are verified
        first, then one read returns every meter's stored neighbours and every contract's stored usage, the
        rules run in memory, and the accepted reports are written with their log entries in one append."""
        peeked = [_peek_contract_id(envelope) for envelope in envelopes]
        outcomes: list[tuple[int, str, Any]] = []  # (index, status, the report's row, or the refusal)
        async with self._batch_transaction() as (session, appends):
            if nonce is not None:
                await self.nonce_store.remember(session, nonce)
            wanted = sorted({cid for cid in peeked if cid is not None})
            contracts: dict[str, Contract] = {}
            if wanted:
                # FOR NO KEY UPDATE: batches of one contract serialize, and a group append (another batch's
                # transaction inserting this batch's reports, whose foreign key takes KEY SHARE) is not blocked
                rows = await session.scalars(
                    select(Contract)
                    .where(Contract.id.in_(wanted))
                    .order_by(Contract.id)
                    .with_for_update(key_share=True)
                )
                contracts = {c.id: c for c in rows.all()}
            state = _BatchState()
            verified: dict[int, _Verified] = {}
            refused: dict[int, dict[str, Any]] = {}
            for index, (envelope, contract_id) in enumerate(zip(envelopes, peeked, strict=True)):
                try:
                    contract = contracts.get(contract_id) if contract_id is not None else None
                    if contract is None:
                        if contract_id is None:
                            raise UsageRefusedError("bad_envelope", "the payload names no contract_id")
                        raise ContractNotFoundError(f"contract {contract_id} not found", field="contract_id")
                    verified[index] = await self._verify(session, caller, contract, envelope, state)
                except HetexError as exc:
                    refused[index] = {"contract_id": contract_id, "error": exc.to_dict()}
            await state.read(session, [(i, v.contract.id, v.payload) for i, v in verified.items()])
            accepted: list[_Checked] = []
            for index in range(len(envelopes)):
                if index in refused:
                    outcomes.append((index, "refused", refused[index]))
                    continue
                v = verified[index]
                try:
                    checked = self._rules(v, state.stored(index), state)
                except HetexError as exc:
                    outcomes.append((index, "refused", {"contract_id": v.contract.id, "error": exc.to_dict()}))
                    continue
                if checked.duplicate:
                    outcomes.append((index, "duplicate", checked.row))
                else:
                    state.accept(checked.row)
                    accepted.append(checked)
                    outcomes.append((index, "accepted", checked.row))
            await appends.append(session, accepted)  # one log append, maybe with other batches' reports
        if nonce is not None:
            nonce.remembered = True
        results = [
            {"index": i, "status": status, **outcome} if status == "refused" else _batch_item(i, outcome, status)
            for i, status, outcome in outcomes
        ]
        counts = {status: sum(1 for r in results if r["status"] == status) for status in BATCH_STATUSES}
        return {"results": results, **counts}

    @contextlib.asynccontextmanager
    async def _batch_transaction(self) -> AsyncIterator[tuple[AsyncSession, GroupAppender]]:
        """A batch's transaction; after it ends, a group leader tells its group whether their reports committed."""
        async with self.sessions() as session:
            committed = False
            try:
                async with session.begin():
                    yield session, self.appends
                committed = True
            finally:
                self.appends.finished(session, committed)

    async def _verify(
        self,
        session: AsyncSession,
        caller: Caller,
        contract: Contract,
        envelope: dict[str, Any],
        state: _BatchState,
    ) -> _Verified:
        """The rules that need no stored report: the caller is the contract's provider, every signature
        verifies under the provider's key, the payload is valid and names this contract. Raises the refusal."""
        require_party(caller, contract.provider_id, contract.provider_id)
        ring = state.rings.get(contract.provider_id)
        if ring is None:
            ring = await self._provider_keyring(session, caller, contract.provider_id)
            state.rings[contract.provider_id] = ring
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
        digest = hashlib.sha256(fast_canonical_bytes(obj)).hexdigest()
        if payload.contract_id != contract.id:
            raise UsageRefusedError("contract_mismatch", "the payload names another contract")
        return _Verified(contract, envelope, payload, digest, signer)

    def _rules(self, v: _Verified, stored: list[Any], state: _BatchState) -> _Checked:
        """The rules against the meter's other reports and the contract, writing nothing: the new row to store
        (not yet added), or the identical stored report (a duplicate). Raises the refusal. `stored`: the
        meter's stored neighbours (_BatchState.read); `state`: what earlier reports of the batch accepted
        (checked as if already stored) and the contract's stored usage."""
        contract, payload, digest = v.contract, v.payload, v.digest
        neighbours = [*stored, *state.meter(contract.id, payload)]
        existing = next((r for r in neighbours if r.seq == payload.seq), None)
        if existing is not None:
            if existing.payload_sha256 == digest:
                return _Checked(existing, v.envelope, duplicate=True)
            raise UsageConflictError(
                f"meter {payload.meter_id} already reported seq {payload.seq} with a different body",
                existing_id=existing.id,
            )
        self._check_fits(contract, payload, self.clock())
        used = state.used(contract.id)
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
            signer_key_id=v.signer,
            status="accepted",
            flags=_flags(neighbours, payload),
            created_at=self.clock(),
            settlement_id=None,
        )
        return _Checked(row, v.envelope, duplicate=False)

    async def _write(self, session: AsyncSession, checked: list[_Checked]) -> None:
        """Append checked reports to the log in order (one append) and store them with their log entries (on
        PostgreSQL in the append's one statement), in the same transaction."""
        if not checked:
            return
        if self.before_logged is not None:  # federation: its lookups done before the log lock is taken
            await self.before_logged(session, sorted({c.row.contract_id for c in checked}))

        def usage_rows(appended: Any) -> list[tuple[Table, list[dict[str, Any]]]]:
            for c, logged in zip(checked, appended, strict=True):
                c.row.envelope = logged.payload.decode("utf-8")  # the countersigned envelope's RFC 8785 bytes
                c.row.log_index = logged.index
            return [(_USAGE, [{col.key: getattr(c.row, col.key) for col in _USAGE.c} for c in checked])]

        records = [("usage", c.row.id, c.envelope) for c in checked]
        appended = await self.ledger.append_signed_many(session, records, rows=usage_rows)
        if self.on_logged is not None:  # federation: mirror to the buyer's exchange (outbox, same transaction)
            for c, logged in zip(checked, appended, strict=True):
                await self.on_logged(session, c.row.contract_id, "usage", c.row.id, logged.envelope)

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
