"""The duties lease and durable export jobs on SQLite (flock) and PostgreSQL (advisory lock), two
exchange processes' services in one test: one holder at a time, the epoch grows at each takeover, and a
write fenced on a stale epoch (checkpoint, round) is refused and leaves nothing; orphaned export jobs
are resumed, or failed with the reason after MAX_ATTEMPTS starts; a live job is left to its owner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from exchange.audit.verify import verify_bundle
from exchange.composition import Services, build_services
from exchange.services.audit import MAX_ATTEMPTS
from exchange.services.lease import Fence, LeaseLostError
from exchange.settings import Settings
from exchange.storage.audit import AuditExport
from exchange.storage.base import now_s
from exchange.storage.ledger import Checkpoint
from exchange.storage.rounds import Round
from federation.keys import SigningKey
from identifiers.ids import new_id_str
from tests.exchange.auditkit import ledger_fill
from tests.exchange.workerkit import until


async def services(url: str, tmp: Path, **settings: object) -> Services:
    svc = await build_services(
        Settings(database_url=url, key_dir=tmp / "keys", exports_dir=tmp / "exports", **settings)  # type: ignore[arg-type]
    )
    await svc.identity.init(exist_ok=True)
    return svc


async def test_one_holder_takeover_and_stale_fences(fresh_db_factory: Callable[[], str], tmp_path: Path) -> None:
    url = fresh_db_factory()
    a, b = [await services(url, tmp_path, lease_poll_seconds=0.05) for _ in range(2)]
    fences: dict[str, Fence | None] = {}

    def probe(name: str) -> Callable[[Fence | None, asyncio.Event], object]:
        async def duty(fence: Fence | None, stop: asyncio.Event) -> None:
            fences[name] = fence
            await stop.wait()

        return duty

    a.lease.add_duty("probe", probe("a"))  # type: ignore[arg-type]
    b.lease.add_duty("probe", probe("b"))  # type: ignore[arg-type]
    try:
        a.lease.task = asyncio.create_task(a.lease.run())
        await until(lambda: _true(a.lease.held), 10, "a to hold the lease")
        b.lease.task = asyncio.create_task(b.lease.run())
        await asyncio.sleep(0.5)
        assert not b.lease.held and "b" not in fences  # one holder at a time
        stale = fences["a"]
        assert stale is not None and stale.epoch == 1
        await a.lease.shutdown()
        await until(lambda: _true(b.lease.held), 10, "b to take the lease over")
        current = fences["b"]
        assert current is not None and current.epoch == stale.epoch + 1

        async with a.sessions.begin() as session:
            with pytest.raises(LeaseLostError):
                await stale.check(session)
        with pytest.raises(LeaseLostError):
            await a.ledger.publish_if_grown(stale)  # the log (empty, never checkpointed) would need one
        with pytest.raises(LeaseLostError):
            await a.rounds.run_round("interval", stale)
        async with a.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Checkpoint)) == 0
            assert await session.scalar(select(func.count()).select_from(Round)) == 0
        assert (await b.ledger.publish_if_grown(current)) is not None
        assert (await b.rounds.run_round("interval", current)).round_id
    finally:
        await a.lease.shutdown()
        await b.lease.shutdown()
        await a.close()
        await b.close()


async def _true(value: bool) -> bool:
    return value


async def _job(svc: Services, regulator: str, *, attempts: int, expires: int, owner: str = "gone") -> str:
    """An export row as a process left it: running, owned by `owner` until `expires`."""
    job_id = new_id_str()
    async with svc.sessions.begin() as session:
        session.add(
            AuditExport(
                id=job_id,
                regulator_id=regulator,
                status="running",
                period_from=0,
                period_to=2**40,
                since_sizes=[],
                records_done=3,
                records_exported=3,
                created_at=now_s(),
                attempts=attempts,
                lease_owner=owner,
                lease_expires_at=expires,
            )
        )
    return job_id


async def test_orphaned_exports_resume_or_fail_with_a_reason(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    svc = await services(url, tmp_path, job_lease_seconds=2)
    try:
        reg = (await svc.participants.add_by_operator("regulator", "R", SigningKey.generate().public.to_base64())).id
        await ledger_fill(svc.ledger, SigningKey.generate(), 12)
        now = now_s()
        orphan = await _job(svc, reg, attempts=1, expires=now - 5)
        worn = await _job(svc, reg, attempts=MAX_ATTEMPTS, expires=now - 5)
        live = await _job(svc, reg, attempts=1, expires=now + 600, owner="alive")
        assert await svc.audit.resume_orphans() == [orphan]
        await svc.audit.wait(orphan)
        done = await svc.audit.status(reg, orphan)
        assert done.status == "done" and done.records_done == 12, done.error
        report = verify_bundle(await svc.audit.bundle_path(reg, orphan), trusted_keys=[svc.identity.public_key])
        assert report.ok, [str(p) for p in report.problems]
        failed = await svc.audit.status(reg, worn)
        assert failed.status == "failed" and f"interrupted {MAX_ATTEMPTS} times" in (failed.error or "")
        assert (await svc.audit.status(reg, live)).status == "running"  # its owner still holds the lease
        async with svc.sessions() as session:
            rows = {r.id: r for r in (await session.scalars(select(AuditExport))).all()}
        assert (rows[orphan].attempts, rows[worn].attempts, rows[live].attempts) == (2, MAX_ATTEMPTS + 1, 1)
        assert await svc.audit.resume_orphans() == []  # nothing left to claim
    finally:
        await svc.close()
