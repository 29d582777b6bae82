"""Regulator audit export jobs: queue, run in the background, stream the log into a signed bundle, serve it.

A job scans the transparency log up to a freshly signed checkpoint with keyset pagination (CHUNK
entries per query), feeding exchange.audit.writer.BundleWriter in a worker thread, so memory stays
bounded whatever the log size; progress is persisted after every chunk. Only the regulator who created
an export may read its status or download its bundle.

Jobs are durable: a row carries a job lease (owner token, expiry, attempts). The process running a job
renews the lease while it works, and every write of the job is conditional on still owning it. A job whose
process stopped (SIGTERM: handed back at once; kill -9: when its lease expires) is resumed from the start by
the process holding the duties lease (`resume_orphans`), up to MAX_ATTEMPTS starts, then failed with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
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
MAX_ATTEMPTS = 3
#: Test hook: seconds an export waits once running (so a test can kill its process mid-job). Never in production.
DELAY_HOOK_ENV = "HETEX_TEST_EXPORT_DELAY"


class ExportNotFoundError(NotFoundError):
    """No audit export has this id."""

    code = "export_not_found"


class ExportNotYoursError(PermissionDeniedError):
    """The audit export belongs to another regulator."""

    code = "export_not_owner"


class ExportNotReadyError(ConflictError):
    """The bundle of this export is not (or no longer) available: the job is queued, running or failed."""

    code = "export_not_ready"


class ExportLeaseLostError(ConflictError):
    """This process no longer owns the export job (its lease expired and another process resumed it)."""

    code = "export_lease_lost"


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
    attempts: int = 0

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
                "attempts": self.attempts,  # starts of the job (more than 1: resumed after a process stopped)
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
        attempts=int(row.attempts or 0),
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
        job_lease_seconds: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.identity = identity
        self.catalogue = catalogue
        self.exports_dir = Path(exports_dir)
        self.authority = authority
        self.chunk = chunk
        self.job_lease_seconds = job_lease_seconds
        self.owner = new_id_str()  # this process's job-lease token
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
                attempts=1,
                lease_owner=self.owner,
                lease_expires_at=self._lease_end(),
            )
            session.add(row)
        self._start(row.id)
        return _status(row)

    def _lease_end(self) -> int:
        return now_s() + max(1, round(self.job_lease_seconds))

    def _start(self, export_id: str) -> None:
        self._tasks[export_id] = asyncio.create_task(self._run(export_id), name=f"audit-export-{export_id}")

    async def resume_orphans(self) -> list[str]:
        """Claim queued/running exports whose job lease expired (their process died) and run them again;
        one started MAX_ATTEMPTS times already is failed with the reason. Returns the ids resumed."""
        now = now_s()
        orphaned = (AuditExport.status.in_(("queued", "running"))) & (
            AuditExport.lease_expires_at.is_(None) | (AuditExport.lease_expires_at < now)
        )
        async with self.sessions() as session:
            ids = (await session.scalars(select(AuditExport.id).where(orphaned).order_by(AuditExport.created_at))).all()
        resumed = []
        for export_id in ids:
            async with self.sessions.begin() as session:
                claimed = await session.execute(
                    update(AuditExport)
                    .where(AuditExport.id == export_id, orphaned)
                    .values(
                        lease_owner=self.owner,
                        lease_expires_at=self._lease_end(),
                        attempts=AuditExport.attempts + 1,
                        status="queued",
                    )
                    .returning(AuditExport.attempts)
                )
                attempts = claimed.scalar()
            if attempts is None:
                continue  # another process claimed it first
            if attempts > MAX_ATTEMPTS:
                log.warning("audit export %s: interrupted %d times, failed", export_id, attempts - 1)
                await self._fail(
                    export_id,
                    self.exports_dir / f"{export_id}.tmp",
                    f"interrupted {attempts - 1} times (the exchange processes running it stopped); not retried",
                )
                continue
            log.info("audit export %s: resumed (attempt %d of %d)", export_id, attempts, MAX_ATTEMPTS)
            self._start(export_id)
            resumed.append(export_id)
        return resumed

    async def run_resumer(self, stop: asyncio.Event) -> None:
        """Duty loop: resume orphaned exports now and every half job-lease until `stop`."""
        while not stop.is_set():
            try:
                await self.resume_orphans()
            except Exception:
                log.exception("resuming audit exports failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.5, self.job_lease_seconds / 2))

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
        """Stop jobs running in this process; each is handed back (queued, no owner) for another process."""
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the job ----------------------------------------------------------------------------------

    async def _update(self, export_id: str, **values: Any) -> None:
        """Write the job's row if this process still owns it (renewing the lease); else ExportLeaseLostError."""
        values.setdefault("lease_expires_at", self._lease_end())
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(AuditExport)
                .where(AuditExport.id == export_id, AuditExport.lease_owner == self.owner)
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise ExportLeaseLostError(f"audit export {export_id} is now run by another process")

    async def _renew(self, export_id: str) -> None:
        """Keep the job lease while the job works (also through long steps: packing, signing)."""
        while True:
            await asyncio.sleep(max(0.5, self.job_lease_seconds / 3))
            await self._update(export_id)

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
        renew = asyncio.create_task(self._renew(export_id), name=f"audit-export-lease-{export_id}")
        job = asyncio.create_task(self._export(export_id, work), name=f"audit-export-job-{export_id}")
        try:
            await asyncio.wait([renew, job], return_when=asyncio.FIRST_COMPLETED)
            if not job.done():  # the lease could not be renewed: another process owns the job now
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
                raise renew.exception() or ExportLeaseLostError(f"audit export {export_id}: lease lost")
            job.result()
        except asyncio.CancelledError:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            await asyncio.shield(self._hand_back(export_id, work))
            raise
        except ExportLeaseLostError as exc:
            log.warning("audit export %s abandoned by this process: %s", export_id, exc.message)
            await asyncio.to_thread(shutil.rmtree, work, True)
        except HetexError as exc:
            await self._fail(export_id, work, exc.message)
        except Exception:
            log.exception("audit export %s failed", export_id)
            await self._fail(export_id, work, "internal error; see the exchange log")
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
            self._tasks.pop(export_id, None)

    async def _fail(self, export_id: str, work: Path, message: str) -> None:
        await asyncio.to_thread(shutil.rmtree, work, True)
        with contextlib.suppress(ExportLeaseLostError):
            await self._update(export_id, status="failed", error=message, finished_at=now_s(), lease_expires_at=None)

    async def _hand_back(self, export_id: str, work: Path) -> None:
        """This process stops: requeue the job without an owner, so the duties-lease holder resumes it."""
        await asyncio.to_thread(shutil.rmtree, work, True)
        with contextlib.suppress(ExportLeaseLostError):
            await self._update(export_id, status="queued", lease_owner=None, lease_expires_at=None)
        log.info("audit export %s handed back: this process is stopping", export_id)

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
            export_id,
            status="running",
            started_at=now_s(),
            checkpoint_size=cp.size,
            records_total=cp.size,
            records_done=0,
            records_exported=0,
        )
        delay = os.environ.get(DELAY_HOOK_ENV)
        if delay:  # test hook (DELAY_HOOK_ENV)
            await asyncio.sleep(float(delay))
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
            lease_expires_at=None,
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
    "ExportLeaseLostError",
    "ExportNotFoundError",
    "ExportNotReadyError",
    "ExportNotYoursError",
    "ExportRequest",
    "ExportStatus",
]
