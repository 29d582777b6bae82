"""Regulator audit export jobs: queue, run in the background, stream the log into a signed bundle, serve it.

A job scans the transparency log up to a freshly signed checkpoint with keyset pagination (CHUNK
entries per query), feeding exchange.audit.writer.BundleWriter in a worker thread, so memory stays
bounded whatever the log size; progress is persisted after every chunk. Only the regulator who created
an export may read its status or download its bundle.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.audit.writer import BundleKeyInfo, BundleWriter, pack
from exchange.keyid import KEY_NAME
from exchange.services.fields import MAX_SAFE_INT, Code, EpochSeconds, RegionCode
from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService
from exchange.storage.audit import AuditExport
from exchange.storage.base import now_s
from exchange.storage.federation import Peer
from exchange.storage.ledger import LogEntry
from exchange.storage.participants import Participant
from identifiers.catalogue import Catalogue
from identifiers.errors import ConflictError, HetexError, NotFoundError, PermissionDeniedError
from identifiers.ids import new_id_str

log = logging.getLogger("hetex.audit")

CHUNK = 2000
MAX_SINCE = 16


class ExportNotFoundError(NotFoundError):
    """No audit export has this id."""

    code = "export_not_found"


class ExportNotYoursError(PermissionDeniedError):
    """The audit export belongs to another regulator."""

    code = "export_not_owner"


class ExportNotReadyError(ConflictError):
    """The bundle of this export is not (or no longer) available: the job is queued, running or failed."""

    code = "export_not_ready"


class ExportRequest(BaseModel):
    """Body of POST /v1/audit/exports: period [from, to) in epoch seconds and optional filters."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    period_from: EpochSeconds = Field(alias="from")
    period_to: EpochSeconds = Field(alias="to")
    region: RegionCode | None = None
    operator: Annotated[str, StringConstraints(min_length=2, max_length=8, pattern=r"^[0-9A-Z]{2,8}$")] | None = None
    model_family: Code | None = None
    since_sizes: list[Annotated[StrictInt, Field(ge=1, le=MAX_SAFE_INT)]] = Field(
        default_factory=list, max_length=MAX_SINCE
    )

    @model_validator(mode="after")
    def _period(self) -> ExportRequest:
        if self.period_to <= self.period_from:
            raise ValueError("`to` must be after `from`")
        if any(s < 1 for s in self.since_sizes):
            raise ValueError("since_sizes must be positive tree sizes")
        return self


@dataclass(frozen=True)
class ExportStatus:
    """What GET /v1/audit/exports/{id} shows."""

    id: str
    status: str
    filters: dict[str, Any]
    since_sizes: list[int]
    records_done: int
    records_total: int | None
    records_exported: int
    checkpoint_size: int | None
    bundle_sha256: str | None
    bundle_bytes: int | None
    error: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None

    def to_json(self) -> dict[str, Any]:
        """JSON form with a link to the bundle once done."""
        return {
            "id": self.id,
            "status": self.status,
            "filters": self.filters,
            "since_sizes": self.since_sizes,
            "progress": {
                "records_done": self.records_done,
                "records_total": self.records_total,
                "records_exported": self.records_exported,
            },
            "checkpoint_size": self.checkpoint_size,
            "bundle": (
                {
                    "href": f"/v1/audit/exports/{self.id}/bundle",
                    "sha256": self.bundle_sha256,
                    "bytes": self.bundle_bytes,
                }
                if self.status == "done"
                else None
            ),
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _status(row: AuditExport) -> ExportStatus:
    return ExportStatus(
        id=row.id,
        status=row.status,
        filters={
            "from": row.period_from,
            "to": row.period_to,
            "region": row.region,
            "operator": row.operator,
            "model_family": row.model_family,
        },
        since_sizes=list(row.since_sizes or []),
        records_done=int(row.records_done),
        records_total=row.records_total,
        records_exported=int(row.records_exported),
        checkpoint_size=row.checkpoint_size,
        bundle_sha256=row.bundle_sha256,
        bundle_bytes=row.bundle_bytes,
        error=row.error,
        created_at=int(row.created_at),
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def catalogue_facts(catalogue: Catalogue) -> dict[str, dict[str, Any]]:
    """Model code -> {family, domestic, scu} for the bundle's catalogue.json."""
    out: dict[str, dict[str, Any]] = {}
    for m in catalogue.models:
        scu = getattr(m, "scu", None)
        out[m.code] = {"family": m.family, "domestic": bool(m.domestic), "scu": None if scu is None else str(scu)}
    return out


class AuditService:
    """Creates, runs and serves regulator audit exports."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ledger: LedgerService,
        identity: IdentityService,
        catalogue: Catalogue,
        exports_dir: Path,
        authority: str,
        *,
        chunk: int = CHUNK,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.identity = identity
        self.catalogue = catalogue
        self.exports_dir = Path(exports_dir)
        self.authority = authority
        self.chunk = chunk
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- requests ---------------------------------------------------------------------------------

    async def create_export(self, regulator_id: str, request: ExportRequest) -> ExportStatus:
        """Queue an export for `regulator_id` (its previous exports' sizes become consistency targets)."""
        async with self.sessions.begin() as session:
            earlier = (
                await session.scalars(
                    select(AuditExport.checkpoint_size)
                    .where(
                        AuditExport.regulator_id == regulator_id,
                        AuditExport.status == "done",
                        AuditExport.checkpoint_size.is_not(None),
                    )
                    .order_by(AuditExport.created_at.desc())
                    .limit(MAX_SINCE)
                )
            ).all()
            since = sorted({*request.since_sizes, *(int(s) for s in earlier if s)})
            row = AuditExport(
                id=new_id_str(),
                regulator_id=regulator_id,
                status="queued",
                period_from=request.period_from,
                period_to=request.period_to,
                region=request.region,
                operator=request.operator,
                model_family=request.model_family,
                since_sizes=since,
                records_done=0,
                records_exported=0,
                created_at=now_s(),
            )
            session.add(row)
        self._tasks[row.id] = asyncio.create_task(self._run(row.id), name=f"audit-export-{row.id}")
        return _status(row)

    async def _row(self, session: AsyncSession, regulator_id: str, export_id: str) -> AuditExport:
        row = await session.get(AuditExport, export_id)
        if row is None:
            raise ExportNotFoundError(f"no audit export {export_id}", field="id")
        if row.regulator_id != regulator_id:
            raise ExportNotYoursError("this audit export belongs to another regulator", reason="not_owner")
        return row

    async def status(self, regulator_id: str, export_id: str) -> ExportStatus:
        """Status and progress of one of the caller's exports."""
        async with self.sessions() as session:
            return _status(await self._row(session, regulator_id, export_id))

    async def bundle_path(self, regulator_id: str, export_id: str) -> Path:
        """The finished bundle archive of one of the caller's exports."""
        async with self.sessions() as session:
            row = await self._row(session, regulator_id, export_id)
        path = self.exports_dir / row.bundle_file if row.bundle_file else None
        if row.status != "done" or path is None or not path.is_file():
            raise ExportNotReadyError(f"audit export {export_id} is {row.status}", export_status=row.status)
        return path

    async def wait(self, export_id: str) -> None:
        """Wait for a job started by this process (tests, the demo, the bench)."""
        task = self._tasks.get(export_id)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        """Cancel jobs still running in this process (they are marked failed)."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the job ----------------------------------------------------------------------------------

    async def _update(self, export_id: str, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(AuditExport).where(AuditExport.id == export_id).values(**values))

    async def _keys(self, session: AsyncSession) -> list[BundleKeyInfo]:
        keys = [
            BundleKeyInfo(k.key_id, k.name, k.public_key, "exchange", None, k.not_before, k.not_after)
            for k in await self.identity.keys(session)
            if k.status != "revoked"
        ]
        # a peer exchange's key id is its C2SP id under its log origin (the name a verifier re-derives it with)
        peers = (await session.scalars(select(Peer))).all()
        keys.extend(BundleKeyInfo(p.key_id, p.origin, p.public_key, "peer-exchange", p.participant_id) for p in peers)
        return keys

    async def _signer_keys(self, session: AsyncSession) -> dict[str, BundleKeyInfo]:
        """Participant keys that may sign log records (node usage reports), by key id (C2SP id under KEY_NAME)."""
        rows = (await session.scalars(select(Participant).where(Participant.role != "peer"))).all()
        return {p.key_id: BundleKeyInfo(p.key_id, KEY_NAME, p.public_key, "participant", p.id) for p in rows}

    async def _run(self, export_id: str) -> None:
        work = self.exports_dir / f"{export_id}.tmp"
        try:
            await self._export(export_id, work)
        except asyncio.CancelledError:
            await asyncio.shield(self._fail(export_id, work, "interrupted: the exchange process stopped"))
            raise
        except HetexError as exc:
            await self._fail(export_id, work, exc.message)
        except Exception:
            log.exception("audit export %s failed", export_id)
            await self._fail(export_id, work, "internal error; see the exchange log")
        finally:
            self._tasks.pop(export_id, None)

    async def _fail(self, export_id: str, work: Path, message: str) -> None:
        await asyncio.to_thread(shutil.rmtree, work, True)
        await self._update(export_id, status="failed", error=message, finished_at=now_s())

    async def _export(self, export_id: str, work: Path) -> None:
        cp = await self.ledger.checkpoint()
        async with self.sessions() as session:
            row = await session.get(AuditExport, export_id)
            assert row is not None
            keys = await self._keys(session)
            signer_keys = await self._signer_keys(session)
            filters = {
                "from": row.period_from,
                "to": row.period_to,
                "region": row.region,
                "operator": row.operator,
                "model_family": row.model_family,
            }
            since = list(row.since_sizes or [])
            created = int(row.created_at)
        await self._update(
            export_id, status="running", started_at=now_s(), checkpoint_size=cp.size, records_total=cp.size
        )
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.rmtree, work, True)
        writer = BundleWriter(
            work / "bundle",
            export_id=export_id,
            created_at=created,
            authority=self.authority,
            origin=self.ledger.origin,
            filters=filters,
            checkpoint_note=cp.note,
            keys=keys,
            catalogue=catalogue_facts(self.catalogue),
            since_sizes=since,
            signer_keys=signer_keys,
        )
        try:
            after = -1
            while after + 1 < cp.size:
                async with self.sessions() as session:
                    rows = (
                        await session.execute(
                            select(LogEntry.idx, LogEntry.payload)
                            .where(LogEntry.idx > after, LogEntry.idx < cp.size)
                            .order_by(LogEntry.idx)
                            .limit(self.chunk)
                        )
                    ).all()
                if not rows:
                    raise ExportNotReadyError(f"the log ends at {after + 1} but the checkpoint has {cp.size} entries")
                batch = [(int(i), bytes(p)) for i, p in rows]
                await asyncio.to_thread(_feed, writer, batch)
                after = batch[-1][0]
                await self._update(export_id, records_done=writer.records_seen, records_exported=writer.records_written)
            _kid, key = await self.identity.signer_for()  # the key current now, valid now
            await asyncio.to_thread(writer.finish, key, now_s())
        finally:
            writer.abort()
        name = f"{export_id}.tar.gz"
        archive = await asyncio.to_thread(pack, work / "bundle", self.exports_dir / name, f"hetex-audit-{export_id}")
        digest, size = await asyncio.to_thread(_digest, archive)
        await asyncio.to_thread(shutil.rmtree, work, True)
        await self._update(
            export_id,
            status="done",
            bundle_file=name,
            bundle_sha256=digest,
            bundle_bytes=size,
            records_done=writer.records_seen,
            records_exported=writer.records_written,
            finished_at=now_s(),
        )
        log.info("audit export %s done: %d of %d log entries", export_id, writer.records_written, cp.size)


def _feed(writer: BundleWriter, batch: list[tuple[int, bytes]]) -> None:
    for index, data in batch:
        writer.feed(index, data)


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest(), path.stat().st_size


__all__ = [
    "AuditService",
    "ExportNotFoundError",
    "ExportNotReadyError",
    "ExportNotYoursError",
    "ExportRequest",
    "ExportStatus",
]
