"""The transparency log: signed appends in the caller's transaction, checkpoints, proofs, full verification.

Every contract, usage and settlement record is appended as a DSSE envelope (RFC 8785 canonical JSON of
the envelope is the stored and leaf-hashed bytes) to one RFC 6962 Merkle tree. Indices come from the
single `log_counter` row, locked (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's BEGIN IMMEDIATE
serializes writers) in the caller's transaction, so the business write and its log entry commit or
roll back together: no gaps, no duplicate indices. Each append stores the completed perfect-subtree
nodes, so inclusion and consistency proofs are O(log n) primary-key lookups.

Records already signed by a node (usage reports) go through `append_signed`: the exchange verifies
nothing there (the caller checked the node's signature against the node's key) and COUNTERSIGNS: its
own signature over the same DSSE PAE is appended to the envelope's signatures, so the stored envelope
carries the node's signature and the exchange's, and `verify_log` checks the exchange signature of
every entry uniformly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, false, func, insert, literal_column, or_, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.canonical import fast_canonical_bytes
from exchange.services.identity import IdentityService
from exchange.services.lease import Fence
from exchange.storage.base import now_s
from exchange.storage.ledger import COUNTER_ROW_ID, LogCounter, LogEntry, LogNode
from exchange.storage.ledger import Checkpoint as CheckpointRow
from exchange.storage.transactions import translated_error
from federation.dsse import envelope_from_bytes, record_payload_type, verify_envelope
from federation.errors import EnvelopeError, NoteError
from federation.keys import SigningKey
from federation.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    NodeMapSource,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
)
from federation.note import Checkpoint, NoteSigner, parse_checkpoint, verify_checkpoint
from identifiers.errors import NotFoundError, ValidationError

log = logging.getLogger("hetex.ledger")

_ENTRIES: Table = LogEntry.__table__  # type: ignore[assignment]
_NODES: Table = LogNode.__table__  # type: ignore[assignment]
_COUNTER: Table = LogCounter.__table__  # type: ignore[assignment]

VERIFY_CHUNK = 4096
PROOF_BATCH = 256
#: a record signed ahead of its append: (record type, record id, body, DSSE envelope)
SignedRecord = tuple[str, str, dict[str, Any], dict[str, Any]]
MAX_PROBLEMS = 1000


def b64(data: bytes) -> str:
    """Standard base64 text of bytes (the form hashes take in JSON and notes)."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class AppendedRecord:
    """What an append returns: the leaf index, its hash, the signed envelope and the stored bytes."""

    index: int
    leaf_hash: bytes
    envelope: dict[str, Any]
    payload: bytes


def _append_sql(tables: tuple[Table, ...]) -> str:
    """The PostgreSQL append into `tables`: the counter update ($1 next index, $2 frontier) with one insert per table
    as a data-modifying CTE whose rows are ONE JSON parameter ($3, $4, ...: an array of objects by column name,
    json_populate_recordset). One statement text whatever the number of rows, so it is prepared once per
    connection (a statement per row count was a new parse and plan for almost every group append)."""
    ctes = ", ".join(
        f"append_{n} AS (INSERT INTO {t.name} ({', '.join(c.name for c in t.c)}) "
        f"SELECT {', '.join(c.name for c in t.c)} FROM json_populate_recordset(NULL::{t.name}, ${n + 3}::json))"
        for n, t in enumerate(tables)
    )
    return f"WITH {ctes} UPDATE log_counter SET next_index = $1, frontier = $2 WHERE id = {COUNTER_ROW_ID}"


def _json_rows(table: Table, rows: list[dict[str, Any]]) -> str:
    """`rows` of `table` as the JSON json_populate_recordset reads: bytes as bytea hex text, JSON columns nested."""

    def value(v: Any) -> Any:
        return "\\x" + v.hex() if isinstance(v, bytes | bytearray | memoryview) else v

    return json.dumps([{k: value(v) for k, v in row.items()} for row in rows], separators=(",", ":"))


#: rows to write with appended records, given them: (table, rows) pairs (append_signed_many)
RowsFor = Callable[[Sequence[AppendedRecord]], Sequence[tuple[Table, list[dict[str, Any]]]]]


@dataclass(frozen=True)
class SignedCheckpoint:
    """A stored checkpoint: size, root, the signed C2SP note and the id of the key that signed it."""

    size: int
    root: bytes
    note: str
    key_id: str
    created_at: int

    def to_json(self) -> dict[str, Any]:
        """JSON form (root in base64)."""
        return {
            "size": self.size,
            "root": b64(self.root),
            "note": self.note,
            "key_id": self.key_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class StoredEntry:
    """One log entry as stored."""

    index: int
    record_type: str
    record_id: str
    payload: bytes
    leaf_hash: bytes
    created_at: int

    @property
    def envelope(self) -> dict[str, Any]:
        """The stored DSSE envelope, parsed."""
        return envelope_from_bytes(self.payload)

    def to_json(self) -> dict[str, Any]:
        """JSON form: the stored bytes in base64 and the envelope parsed."""
        return {
            "index": self.index,
            "record_type": self.record_type,
            "record_id": self.record_id,
            "leaf_hash": b64(self.leaf_hash),
            "payload": b64(self.payload),
            "envelope": self.envelope,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 inclusion proof of leaf `index` in the tree of `size` whose root is `root`."""

    index: int
    size: int
    leaf_hash: bytes
    hashes: list[bytes]
    root: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON form (hashes in base64)."""
        return {
            "index": self.index,
            "size": self.size,
            "leaf_hash": b64(self.leaf_hash),
            "hashes": [b64(h) for h in self.hashes],
            "root": b64(self.root),
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 consistency proof from the tree of `size1` to the tree of `size2`."""

    size1: int
    size2: int
    hashes: list[bytes]
    root1: bytes
    root2: bytes

    def to_json(self) -> dict[str, Any]:
        """JSON form (hashes in base64)."""
        return {
            "from": self.size1,
            "to": self.size2,
            "hashes": [b64(h) for h in self.hashes],
            "root1": b64(self.root1),
            "root2": b64(self.root2),
        }


@dataclass(frozen=True)
class LogProblem:
    """One thing wrong with the stored log; `index`..`end` (exclusive) names the entries involved."""

    kind: str
    message: str
    index: int | None = None
    end: int | None = None

    def describe(self) -> str:
        """One line naming the entries."""
        if self.index is None:
            where = "log"
        elif self.end is None or self.end == self.index + 1:
            where = f"entry {self.index}"
        else:
            where = f"entries {self.index}..{self.end - 1}"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class LogReport:
    """Result of verify_log: size checked, counts, and the problems found (empty means intact)."""

    size: int = 0
    entries_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[LogProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, problem: LogProblem) -> None:
        """Record a problem (capped at MAX_PROBLEMS)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


class _Recorder:
    """A HashSource that records which aligned ranges a proof needs (values do not change the shape)."""

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def subtree_hash(self, start: int, end: int) -> bytes:
        self.wanted.add((start, end))
        return bytes(HASH_SIZE)


def _split_frontier(size: int, blob: bytes) -> list[bytes]:
    count = size.bit_count()
    if len(blob) != count * HASH_SIZE:
        raise ValueError(f"log_counter frontier holds {len(blob)} bytes, expected {count * HASH_SIZE}")
    return [blob[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(count)]


def _check_validity(
    report: LogReport, keyring: Any, key_id: str, at: int, label: str | None, idx: int | None = None
) -> None:
    """Report `key_not_valid` when the exchange key `key_id` signed (at `at`) outside [not_before, not_after]."""
    entry = keyring.entry(key_id)
    if entry is not None and not entry.valid_at(at):
        where = f"{label}: " if label else ""
        span = f"{entry.not_before}..{entry.not_after if entry.not_after is not None else ''}"
        report.add(LogProblem("key_not_valid", f"{where}signed by {key_id} at {at}, outside its validity {span}", idx))


class LedgerService:
    """Append-only Merkle log of signed records, with checkpoints and proofs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], identity: IdentityService, origin: str) -> None:
        self.sessions = sessions
        self.identity = identity
        self.origin = origin

    # ------------------------------------------------------------------------------------------------
    # appends (always in the caller's transaction)

    async def append(
        self, session: AsyncSession, record_type: str, record_id: str, body: dict[str, Any]
    ) -> AppendedRecord:
        """Sign `body` (RFC 8785 bytes, payload type application/vnd.hetex.<record_type>+json) and append it."""
        return (await self.append_many(session, [(record_type, record_id, body)]))[0]

    async def append_many(
        self,
        session: AsyncSession,
        records: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        signer: tuple[str, SigningKey] | None = None,
        at: int | None = None,
    ) -> list[AppendedRecord]:
        """Sign (current key, or `signer` and its signing time `at` for a key rotation) and append records."""
        if not records:
            return []
        await self.lock(session)  # taken before the key is read, so a rotation never interleaves
        signer = signer or await self.identity.signer_for(session)
        items = []
        for record_type, record_id, body in records:
            payload_type = _payload_type(record_type)
            envelope = self.identity.sign_envelope(payload_type, fast_canonical_bytes(body), signer)
            items.append((record_type, record_id, envelope))
        return await self._append_envelopes(session, items, at)

    async def signer(self, session: AsyncSession) -> tuple[str, SigningKey]:
        """(key id, private key) of the exchange key current now (identity.signer_for)."""
        return await self.identity.signer_for(session)

    def sign_records(
        self, records: Sequence[tuple[str, str, dict[str, Any]]], signer: tuple[str, SigningKey]
    ) -> list[SignedRecord]:
        """Sign records ahead of their append (no I/O): (record type, record id, body, DSSE envelope)."""
        return [
            (t, i, body, self.identity.sign_envelope(_payload_type(t), fast_canonical_bytes(body), signer))
            for t, i, body in records
        ]

    async def append_presigned(
        self, session: AsyncSession, signed: Sequence[SignedRecord], key_id: str
    ) -> list[AppendedRecord]:
        """Append records `sign_records` signed with key `key_id` before this transaction; if another key is
        current by now (a rotation in between), they are signed again with it, under the log lock."""
        if not signed:
            return []
        await self.lock(session)
        signer = await self.identity.signer_for(session)
        if signer[0] != key_id:
            signed = self.sign_records([(t, i, body) for t, i, body, _env in signed], signer)
        return await self._append_envelopes(session, [(t, i, env) for t, i, _body, env in signed])

    async def append_signed(
        self, session: AsyncSession, record_type: str, record_id: str, envelope: dict[str, Any]
    ) -> AppendedRecord:
        """Append a record a node already signed: the exchange countersigns (see the module docstring)."""
        payload_type = _payload_type(record_type)
        if not isinstance(envelope, dict) or envelope.get("payloadType") != payload_type:
            raise ValidationError(f"envelope payloadType must be {payload_type}", field="payloadType")
        if not isinstance(envelope.get("signatures"), list) or not isinstance(envelope.get("payload"), str):
            raise ValidationError("envelope needs payload and signatures", field="envelope")
        payload = _decode_b64(envelope["payload"])
        await self.lock(session)
        signed = self.identity.countersign(envelope, payload_type, payload, await self.identity.signer_for(session))
        return (await self._append_envelopes(session, [(record_type, record_id, signed)]))[0]

    async def append_signed_many(
        self,
        session: AsyncSession,
        records: Sequence[tuple[str, str, dict[str, Any]]],
        *,
        rows: RowsFor | None = None,
    ) -> list[AppendedRecord]:
        """append_signed for several node-signed records in order, under one lock and one counter update (a
        usage batch: one log write for all its accepted reports). `rows(appended)` names rows to insert with the
        entries (the usage reports carrying their log index): on PostgreSQL they go in the same statement.

        The countersignatures are made before the lock with the key this process last signed with, and made
        again under the lock only if another key is current by then (a rotation in between), as
        append_presigned does: what is held under the lock is the counter read, the key read and one write."""
        if not records:
            return []
        checked = []
        for record_type, record_id, envelope in records:
            payload_type = _payload_type(record_type)
            if not isinstance(envelope, dict) or envelope.get("payloadType") != payload_type:
                raise ValidationError(f"envelope payloadType must be {payload_type}", field="payloadType")
            if not isinstance(envelope.get("signatures"), list) or not isinstance(envelope.get("payload"), str):
                raise ValidationError("envelope needs payload and signatures", field="envelope")
            checked.append((record_type, record_id, envelope, payload_type, _decode_b64(envelope["payload"])))

        def countersigned(signer: tuple[str, SigningKey]) -> list[tuple[str, str, dict[str, Any]]]:
            return [
                (record_type, record_id, self.identity.countersign(envelope, payload_type, payload, signer))
                for record_type, record_id, envelope, payload_type, payload in checked
            ]

        guess = self.identity.last_signer()
        early = countersigned(guess) if guess is not None else None
        locked = await self._lock_counter(session)  # the lock and the counter in one read (no second SELECT)
        signer = await self.identity.signer_for(session)
        signed = early if early is not None and guess is not None and guess[0] == signer[0] else countersigned(signer)
        return await self._append_envelopes(session, signed, locked=locked, rows=rows)

    async def lock(self, session: AsyncSession) -> None:
        """Lock the log counter row for the caller's transaction (every signer and a key rotation take it)."""
        await self._lock_counter(session)

    async def _lock_counter(self, session: AsyncSession) -> tuple[int, bytes]:
        stmt = (
            select(LogCounter.next_index, LogCounter.frontier).where(LogCounter.id == COUNTER_ROW_ID).with_for_update()
        )
        row = (await session.execute(stmt)).one()
        return int(row.next_index), bytes(row.frontier)

    async def _append_envelopes(
        self,
        session: AsyncSession,
        items: Sequence[tuple[str, str, dict[str, Any]]],
        at: int | None = None,
        *,
        locked: tuple[int, bytes] | None = None,
        rows: RowsFor | None = None,
    ) -> list[AppendedRecord]:
        """Append signed envelopes; `locked`: the counter row as the caller already read it FOR UPDATE in this
        transaction (each round trip under the lock is one every other appender waits for); `rows`: see
        append_signed_many."""
        if not items:
            return []
        payloads = [fast_canonical_bytes(env) for _t, _i, env in items]
        leaves = [leaf_hash(p) for p in payloads]
        size, blob = await self._lock_counter(session) if locked is None else locked
        cr = CompactRange.from_frontier(size, _split_frontier(size, blob))
        now = now_s() if at is None else at
        entry_rows: list[dict[str, Any]] = []
        node_rows: list[dict[str, Any]] = []
        out: list[AppendedRecord] = []
        for (record_type, record_id, env), payload, leaf in zip(items, payloads, leaves, strict=True):
            index = cr.size
            completed = cr.append(leaf)
            entry_rows.append(
                {
                    "idx": index,
                    "record_type": record_type,
                    "record_id": record_id,
                    "payload": payload,
                    "leaf_hash": leaf,
                    "created_at": now,
                }
            )
            node_rows.extend({"level": lv, "index": ix, "hash": h} for lv, ix, h in completed[1:])
            out.append(AppendedRecord(index, leaf, env, payload))
        writes = [(_ENTRIES, entry_rows), (_NODES, node_rows), *(rows(out) if rows is not None else [])]
        counter = (
            update(LogCounter)
            .where(LogCounter.id == COUNTER_ROW_ID)
            .values(next_index=cr.size, frontier=b"".join(cr.hashes))
        )
        if session.get_bind().dialect.name == "postgresql":
            # one statement: every insert a data-modifying CTE of the counter update (one round trip under the lock)
            present = [(table, table_rows) for table, table_rows in writes if table_rows]
            sql = _append_sql(tuple(table for table, _rows in present))
            args = [_json_rows(table, table_rows) for table, table_rows in present]
            conn = await session.connection()
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            try:
                await driver.execute(sql, cr.size, b"".join(cr.hashes), *args)
            except Exception as exc:
                raise translated_error(exc, sql, args) from exc
            return out
        # Core inserts on the tables (not the ORM bulk path): the same SQL, a fraction of the overhead
        for table, table_rows in writes:
            if table_rows:
                await session.execute(insert(table), table_rows)
        await session.execute(counter)
        return out

    # ------------------------------------------------------------------------------------------------
    # checkpoints

    async def size(self, session: AsyncSession | None = None) -> int:
        """Number of entries committed (as seen by `session`)."""
        if session is None:
            async with self.sessions() as own:
                return await self.size(own)
        value = await session.scalar(select(LogCounter.next_index).where(LogCounter.id == COUNTER_ROW_ID))
        return int(value or 0)

    async def latest_checkpoint(self, session: AsyncSession | None = None) -> SignedCheckpoint | None:
        """The newest stored checkpoint, or None."""
        if session is None:
            async with self.sessions() as own:
                return await self.latest_checkpoint(own)
        row = await session.scalar(select(CheckpointRow).order_by(CheckpointRow.size.desc()).limit(1))
        return None if row is None else _signed(row)

    async def checkpoint(self, session: AsyncSession | None = None) -> SignedCheckpoint:
        """The latest checkpoint, first signing a new one (current key) if the log grew since."""
        if session is None:
            async with self.sessions.begin() as own:
                return await self.checkpoint(own)
        latest = await self.latest_checkpoint(session)
        if latest is not None and latest.size == await self.size(session):
            return latest
        size, blob = await self._lock_counter(session)
        latest = await self.latest_checkpoint(session)
        if latest is not None and latest.size == size:
            return latest
        key_id, key = await self.identity.signer_for(session)
        root = CompactRange.from_frontier(size, _split_frontier(size, blob)).root()
        note = Checkpoint(self.origin, size, root).sign([NoteSigner(self.identity.name, key)])
        row = CheckpointRow(size=size, root=root, note=note, key_id=key_id, created_at=now_s())
        session.add(row)
        await session.flush()
        log.info("checkpoint size=%d key=%s", size, row.key_id)
        return _signed(row)

    async def publish_if_grown(self, fence: Fence | None = None) -> SignedCheckpoint | None:
        """Sign a checkpoint in its own transaction if the log grew since the last one; else None. The
        publisher passes the duties lease's `fence`: a process that lost the lease signs nothing."""
        async with self.sessions() as session:
            latest = await self.latest_checkpoint(session)
            if latest is not None and latest.size == await self.size(session):
                return None
        async with self.sessions.begin() as session:
            if fence is not None:
                await fence.check(session)
            return await self.checkpoint(session)

    async def run_publisher(self, interval: float, stop: asyncio.Event, fence: Fence | None = None) -> None:
        """Background loop: publish a checkpoint every `interval` seconds when the log grew, until `stop` is set.

        Stopping waits for a publication in progress to finish (never cancelled inside its transaction).
        """
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self.publish_if_grown(fence)
            except Exception:
                log.exception("checkpoint publication failed; retrying in %s s", interval)

    # ------------------------------------------------------------------------------------------------
    # reads and proofs

    async def entry(self, index: int, session: AsyncSession | None = None) -> StoredEntry:
        """The stored entry at `index`."""
        if session is None:
            async with self.sessions() as own:
                return await self.entry(index, own)
        if index < 0:
            raise ValidationError("index must be >= 0", field="index")
        row = await session.get(LogEntry, index)
        if row is None:
            raise NotFoundError(f"no log entry {index}", field="index")
        return _stored(row)

    async def entries_for(self, record_id: str, session: AsyncSession | None = None) -> list[StoredEntry]:
        """Every entry appended for `record_id` (oldest first)."""
        if session is None:
            async with self.sessions() as own:
                return await self.entries_for(record_id, own)
        rows = (
            await session.scalars(select(LogEntry).where(LogEntry.record_id == record_id).order_by(LogEntry.idx))
        ).all()
        return [_stored(r) for r in rows]

    async def _default_size(self, session: AsyncSession, size: int | None) -> int:
        """`size`, or the latest checkpoint's size (the log size when there is none); checked when fetching."""
        if size is not None:
            return size
        latest = await self.latest_checkpoint(session)
        return latest.size if latest is not None else await self.size(session)

    async def _source(
        self, session: AsyncSession, ranges: Iterable[tuple[int, int]], size_field: str = "size"
    ) -> NodeMapSource:
        """Fetch the stored hashes of aligned ranges in one query (leaves from log_entries, others log_nodes).

        A missing hash means the asked tree size is beyond the log: ValidationError naming `size_field`.
        """
        leaves: list[int] = []
        nodes: list[tuple[int, int]] = []
        for start, end in ranges:
            n = end - start
            if n == 1:
                leaves.append(start)
            else:
                level = n.bit_length() - 1
                nodes.append((level, start >> level))
        leaf_q: Any = select(literal_column("0"), LogEntry.idx, LogEntry.leaf_hash).where(LogEntry.idx.in_(leaves))
        by_level: dict[int, list[int]] = {}
        for lv, ix in nodes:
            by_level.setdefault(lv, []).append(ix)
        cond = or_(false(), *(and_(LogNode.level == lv, LogNode.index.in_(ixs)) for lv, ixs in by_level.items()))
        node_q: Any = select(LogNode.level, LogNode.index, LogNode.hash).where(cond)
        stmt: Any = union_all(leaf_q, node_q) if leaves and nodes else leaf_q if leaves else node_q
        found: dict[tuple[int, int], bytes] = {}
        if leaves or nodes:
            found = {(int(lv), int(ix)): bytes(h) for lv, ix, h in await session.execute(stmt)}
        if len(found) != len(leaves) + len(nodes):
            raise ValidationError(f"{size_field} is beyond the log size {await self.size(session)}", field=size_field)
        return NodeMapSource(found)

    async def root_at(self, size: int, session: AsyncSession | None = None) -> bytes:
        """Root hash of the first `size` entries, from stored nodes."""
        if session is None:
            async with self.sessions() as own:
                return await self.root_at(size, own)
        if size == 0:
            return EMPTY_ROOT
        rec = _Recorder()
        tree_root(rec, size)
        return tree_root(await self._source(session, rec.wanted), size)

    async def inclusion_proof(
        self, index: int, size: int | None = None, session: AsyncSession | None = None
    ) -> InclusionProof:
        """Inclusion proof of entry `index` in the tree of `size` (default: the latest checkpoint's size)."""
        if session is None:
            async with self.sessions() as own:
                return await self.inclusion_proof(index, size, own)
        if index < 0:
            raise ValidationError("index must be >= 0", field="index")
        size = await self._default_size(session, size)
        if index >= size:
            raise ValidationError(f"index {index} is not in a tree of size {size}", field="index")
        rec = _Recorder()
        inclusion_proof(rec, index, size)
        tree_root(rec, size)
        rec.wanted.add((index, index + 1))
        source = await self._source(session, rec.wanted)
        return InclusionProof(
            index=index,
            size=size,
            leaf_hash=source.subtree_hash(index, index + 1),
            hashes=inclusion_proof(source, index, size),
            root=tree_root(source, size),
        )

    async def inclusion_proofs(
        self, indices: Sequence[int], size: int, session: AsyncSession | None = None
    ) -> list[InclusionProof]:
        """Inclusion proofs of many entries in the tree of `size`, fetching hashes for PROOF_BATCH at a time."""
        if session is None:
            async with self.sessions() as own:
                return await self.inclusion_proofs(indices, size, own)
        for index in indices:
            if not 0 <= index < size:
                raise ValidationError(f"index {index} is not in a tree of size {size}", field="index")
        out: list[InclusionProof] = []
        for lo in range(0, len(indices), PROOF_BATCH):
            chunk = indices[lo : lo + PROOF_BATCH]
            rec = _Recorder()
            tree_root(rec, size)
            for index in chunk:
                inclusion_proof(rec, index, size)
                rec.wanted.add((index, index + 1))
            source = await self._source(session, rec.wanted)
            root = tree_root(source, size)
            out.extend(
                InclusionProof(
                    index, size, source.subtree_hash(index, index + 1), inclusion_proof(source, index, size), root
                )
                for index in chunk
            )
        return out

    async def consistency_proof(
        self, size1: int, size2: int | None = None, session: AsyncSession | None = None
    ) -> ConsistencyProof:
        """Consistency proof from size1 to size2 (default: the latest checkpoint's size); 0 < size1 <= size2."""
        if session is None:
            async with self.sessions() as own:
                return await self.consistency_proof(size1, size2, own)
        if size1 < 1:
            raise ValidationError(
                "from must be >= 1 (nothing is consistent with the empty tree by proof)", field="from"
            )
        size2 = await self._default_size(session, size2)
        if size1 > size2:
            raise ValidationError(f"from {size1} is larger than to {size2}", field="from")
        rec = _Recorder()
        consistency_proof(rec, size1, size2)
        tree_root(rec, size1)
        tree_root(rec, size2)
        source = await self._source(session, rec.wanted, "to")
        return ConsistencyProof(
            size1=size1,
            size2=size2,
            hashes=consistency_proof(source, size1, size2),
            root1=tree_root(source, size1),
            root2=tree_root(source, size2),
        )

    # ------------------------------------------------------------------------------------------------
    # verification of the whole stored log

    async def verify_log(self, session: AsyncSession | None = None, *, earlier: Sequence[str] = ()) -> LogReport:
        """Recompute every leaf and node from the stored bytes, check every signature, every checkpoint.

        `earlier` are signed checkpoint notes kept elsewhere (e.g. by an auditor): each must be signed by
        an exchange key and its root must equal the recomputed root at its size (consistency).
        """
        if session is None:
            async with self.sessions() as own:
                return await self.verify_log(own, earlier=earlier)
        report = LogReport()
        keyring = await self.identity.keyring(session)
        counter = (await session.execute(select(LogCounter.next_index, LogCounter.frontier))).one()
        size = int(counter.next_index)
        report.size = size

        roots_wanted: dict[int, list[tuple[str, bytes]]] = {}
        for row in (await session.scalars(select(CheckpointRow).order_by(CheckpointRow.size))).all():
            report.checkpoints_checked += 1
            label = f"stored checkpoint of size {row.size}"
            self._check_note(report, row.note, keyring, label, roots_wanted, row_size=row.size, row_root=row.root)
            _check_validity(report, keyring, row.key_id, int(row.created_at), label)
        for i, note in enumerate(earlier):
            report.checkpoints_checked += 1
            self._check_note(report, note, keyring, f"earlier checkpoint #{i + 1}", roots_wanted)
        for cp_size in sorted(roots_wanted):
            if cp_size > size:
                for label, _root in roots_wanted[cp_size]:
                    report.add(LogProblem("checkpoint_beyond_log", f"{label} is beyond the log size {size}", size))
        if 0 in roots_wanted:
            for label, root in roots_wanted[0]:
                if root != EMPTY_ROOT:
                    report.add(LogProblem("checkpoint_root_mismatch", f"{label}: root of the empty tree is wrong"))

        cr = CompactRange()
        bad: list[tuple[int, int]] = []
        expected = 0
        broken_at: int | None = None
        start = 0
        while True:
            rows = (
                await session.execute(
                    select(
                        LogEntry.idx, LogEntry.record_type, LogEntry.payload, LogEntry.leaf_hash, LogEntry.created_at
                    )
                    .where(LogEntry.idx >= start)
                    .order_by(LogEntry.idx)
                    .limit(VERIFY_CHUNK)
                )
            ).all()
            if not rows:
                break
            first, last = int(rows[0].idx), int(rows[-1].idx)
            nodes = await self._nodes_completed_in(session, first, last + 1)
            for entry in rows:
                idx = int(entry.idx)
                if idx != expected:
                    report.add(LogProblem("entry_missing", "no stored entry at this index", expected, idx))
                    bad.append((expected, idx))
                    if broken_at is None:
                        broken_at = expected
                        report.add(
                            LogProblem(
                                "tree_unverifiable", "tree hashes after a missing entry cannot be recomputed", expected
                            )
                        )
                    expected = idx
                payload = bytes(entry.payload)
                leaf = leaf_hash(payload)
                if leaf != bytes(entry.leaf_hash):
                    report.add(
                        LogProblem("leaf_hash_mismatch", "stored leaf hash is not the hash of the stored bytes", idx)
                    )
                    bad.append((idx, idx + 1))
                self._check_entry_signature(report, bad, idx, entry.record_type, payload, keyring, entry.created_at)
                report.entries_checked += 1
                expected = idx + 1
                if broken_at is not None:
                    continue
                completed = cr.append(leaf)
                for level, nidx, h in completed[1:]:
                    lo, hi = nidx << level, (nidx + 1) << level
                    stored = nodes.get((level, nidx))
                    if stored == h:
                        continue
                    if any(lo <= a and b <= hi for a, b in bad):
                        continue  # an entry inside already reported: its ancestors differ as a consequence
                    kind, what = (
                        ("node_missing", "no stored tree node")
                        if stored is None
                        else ("node_mismatch", "stored tree node differs from the recomputed one")
                    )
                    report.add(
                        LogProblem(
                            kind, f"{what} (level {level}, index {nidx}): entries moved, changed or replaced", lo, hi
                        )
                    )
                    bad.append((lo, hi))
                for label, root in roots_wanted.get(cr.size, []):
                    if cr.root() != root:
                        report.add(
                            LogProblem(
                                "checkpoint_root_mismatch", f"{label} does not match the recomputed tree", 0, cr.size
                            )
                        )
            start = last + 1

        if expected != size:
            if expected < size:
                report.add(
                    LogProblem(
                        "entry_missing",
                        f"counter says {size} entries but the last stored is {expected - 1}",
                        expected,
                        size,
                    )
                )
            else:
                report.add(LogProblem("entry_unexpected", f"entries beyond the counter's size {size}", size, expected))
        if broken_at is None and expected == size and not bad:
            try:
                frontier = _split_frontier(size, bytes(counter.frontier))
            except ValueError as exc:
                report.add(LogProblem("counter_frontier", str(exc)))
            else:
                if frontier != cr.hashes:
                    report.add(LogProblem("counter_frontier", "stored frontier differs from the recomputed tree"))
        if broken_at is None and expected == size:
            node_count = int(await session.scalar(select(func.count()).select_from(LogNode)) or 0)
            want = sum(size >> level for level in range(1, max(size.bit_length(), 1)))
            if node_count != want:
                report.add(LogProblem("node_count", f"{node_count} stored tree nodes, expected {want}"))
        return report

    def _check_note(
        self,
        report: LogReport,
        note: str,
        keyring: Any,
        label: str,
        roots_wanted: dict[int, list[tuple[str, bytes]]],
        *,
        row_size: int | None = None,
        row_root: bytes | None = None,
    ) -> None:
        try:
            cp = verify_checkpoint(note, keyring, origin=self.origin)
        except NoteError as exc:
            report.add(LogProblem("checkpoint_signature", f"{label}: {exc.message}"))
            try:
                text, _sep, _sigs = note.partition("\n\n")
                cp = parse_checkpoint(text + "\n")
            except NoteError:
                return
        if row_size is not None and (cp.size != row_size or cp.root != bytes(row_root or b"")):
            report.add(LogProblem("checkpoint_row_mismatch", f"{label}: size/root columns differ from the signed note"))
        roots_wanted.setdefault(cp.size, []).append((label, cp.root))

    def _check_entry_signature(
        self,
        report: LogReport,
        bad: list[tuple[int, int]],
        idx: int,
        record_type: str,
        payload: bytes,
        keyring: Any,
        logged_at: int,
    ) -> None:
        try:
            envelope = envelope_from_bytes(payload)
            verify_envelope(envelope, keyring, payload_type=_payload_type(record_type))
        except (EnvelopeError, ValueError) as exc:
            message = exc.message if isinstance(exc, EnvelopeError) else str(exc)
            report.add(LogProblem("bad_signature", f"exchange signature does not verify: {message}", idx))
            bad.append((idx, idx + 1))
            return
        for sig in envelope.get("signatures", []):  # node signatures are not in the exchange keyring: skipped
            if isinstance(sig, dict) and isinstance(sig.get("keyid"), str):
                _check_validity(report, keyring, sig["keyid"], int(logged_at), None, idx)

    async def _nodes_completed_in(self, session: AsyncSession, first: int, end: int) -> dict[tuple[int, int], bytes]:
        """Stored nodes whose last leaf lies in [first, end): node (l, k) completes at leaf ((k + 1) << l) - 1."""
        stmt = text(
            'SELECT level, "index", hash FROM log_nodes '
            'WHERE ((("index" + 1) << level) - 1) >= :first AND ((("index" + 1) << level) - 1) < :end'
        )
        rows = await session.execute(stmt, {"first": first, "end": end})
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in rows}


def _decode_b64(value: str) -> bytes:
    """Standard or URL-safe base64, padding optional (what DSSE allows), or ValidationError naming payload."""
    std = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except ValueError:
        raise ValidationError("envelope payload is not base64", field="payload") from None


def _payload_type(record_type: str) -> str:
    try:
        return record_payload_type(record_type)
    except ValueError as exc:
        raise ValidationError(str(exc), field="record_type") from None


def _signed(row: CheckpointRow) -> SignedCheckpoint:
    return SignedCheckpoint(int(row.size), bytes(row.root), row.note, row.key_id, int(row.created_at))


def _stored(row: LogEntry) -> StoredEntry:
    return StoredEntry(
        int(row.idx), row.record_type, row.record_id, bytes(row.payload), bytes(row.leaf_hash), int(row.created_at)
    )
