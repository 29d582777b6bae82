"""Heartbeats written together (exchange.services.heartbeats): on PostgreSQL the heartbeats that arrive together
share one UPDATE, and each still gets the outcome it would get alone; SQLite writes each alone, same outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from exchange.bench.fleet import Fleet, seed_fleet
from exchange.services.heartbeats import HeartbeatWriter
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.registration import Site


@asynccontextmanager
async def _fleet(url: str, keys: Path, sites: int) -> AsyncIterator[tuple[Fleet, Any]]:
    """`sites` seeded fleet sites in the database at `url`, and a session factory on it (disposed after)."""
    fleet = await seed_fleet(url, keys, sites)
    engine = make_engine(url)
    try:
        yield fleet, make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def _stored(sessions: Any) -> dict[str, tuple[str, int | None]]:
    async with sessions() as session:
        rows = (await session.execute(select(Site.cri, Site.provider_id, Site.last_heartbeat_at))).all()
    return {r.cri: (r.provider_id, r.last_heartbeat_at) for r in rows}


async def test_concurrent_heartbeats_each_get_their_own_outcome(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    async with _fleet(fresh_db_factory(), tmp_path / "keys", 5) as (fleet, sessions):
        sites = await _stored(sessions)
        cris = [s.cri for s in fleet.sites]
        owner = {cri: sites[cri][0] for cri in cris}
        t = max(at or 0 for _p, at in sites.values()) + 100
        async with sessions.begin() as session:  # the last site is deregistered
            await session.execute(update(Site).where(Site.cri == cris[4]).values(status="tombstoned"))
        writer = HeartbeatWriter(sessions)
        beats = [
            (cris[0], owner[cris[0]], t),  # moves
            (cris[1], owner[cris[1]], t + 1),  # moves
            (cris[0], owner[cris[0]], t),  # its replay in the same group: changes nothing
            (cris[1], owner[cris[1]], t - 50),  # older than the other heartbeat of site 1 in the group
            (cris[2], owner[cris[3]], t),  # another provider's site
            (cris[3], owner[cris[3]], t + 2),  # moves
            (cris[4], owner[cris[4]], t),  # deregistered
        ]
        moved = await asyncio.gather(*(writer.beat(*b) for b in beats))
        assert moved == [True, True, False, False, False, True, False]
        after = await _stored(sessions)
        assert [after[c][1] for c in cris] == [t, t + 1, sites[cris[2]][1], t + 2, sites[cris[4]][1]]
        if backend == "pg":  # one statement for the seven
            assert (writer.groups, writer.beats) == (1, 7)
        # later: an older heartbeat changes nothing, a newer one moves the site
        assert await asyncio.gather(writer.beat(cris[0], owner[cris[0]], t - 1), writer.beat(*beats[1][:2], t + 9)) == [
            False,
            True,
        ]
        assert (await _stored(sessions))[cris[1]][1] == t + 9


async def test_a_failed_group_is_retried_one_heartbeat_at_a_time(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    async with _fleet(fresh_db_factory(), tmp_path / "keys", 3) as (fleet, sessions):
        sites = await _stored(sessions)
        t = max(at or 0 for _p, at in sites.values()) + 100
        writer = HeartbeatWriter(sessions)
        failures = []

        async def failing(*args: Any) -> set[int]:
            failures.append(args)
            raise ConnectionResetError("the group's connection was lost")

        writer._write_group = failing  # type: ignore[method-assign]
        cris = [s.cri for s in fleet.sites]
        moved = await asyncio.gather(*(writer.beat(c, sites[c][0], t) for c in cris), writer.beat(cris[0], "x", t))
        assert moved == [True, True, True, False]
        assert [(await _stored(sessions))[c][1] for c in cris] == [t, t, t]
        assert len(failures) == (1 if backend == "pg" else 0)
