"""Site heartbeats written to the database: on PostgreSQL the concurrent heartbeats of a process share one UPDATE.

A heartbeat only moves its site's last_heartbeat_at forward (specs/signing.md 7). At fleet scale a process
receives hundreds a second, and one autocommit UPDATE each costs a pool checkout, a round trip and a commit (a
WAL flush) per heartbeat, on the same cores as the requests. So on PostgreSQL the heartbeats that arrive while
the previous group's statement is in flight wait for the next group, and a group is ONE statement (unnest of
the beats, RETURNING the ones that moved a site): no timer, so a lone heartbeat is written at once, and under
load a group is what arrived during one round trip. Each heartbeat gets its own answer, exactly as alone: moved
(its site's liveness is now its time) or not (a replay, an older beat, or a site it may not move: the caller
reads why). A group that fails as a whole (a deadlock with another process's group, a lost connection) is
retried one heartbeat at a time, so each caller gets its own outcome. SQLite (one writer) and a session bound to
a caller's connection (the tests' outer transaction) write each heartbeat alone.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.storage.registration import Site
from exchange.storage.transactions import Prepared, execute_alone

_SITES: Table = Site.__table__  # type: ignore[assignment]

# a heartbeat alone: the caller's own active site, by CRI, moved forward to the beat's time only (bind names are not
# column names, so nothing else is SET). A replay, or an older heartbeat arriving late, matches no row.
HEARTBEAT = Prepared(
    update(_SITES)
    .where(
        _SITES.c.cri == bindparam("beat_cri"),
        _SITES.c.provider_id == bindparam("beat_provider"),
        _SITES.c.status == "active",
        or_(_SITES.c.last_heartbeat_at.is_(None), _SITES.c.last_heartbeat_at < bindparam("beat_at")),
    )
    .values(last_heartbeat_at=bindparam("beat_at"))
)

# a group (PostgreSQL): the same conditions for each (cri, provider, time), answering which ones moved their site. The
# beats travel as one JSON parameter (arrays would make asyncpg introspect their types on every new connection)
GROUP_SQL = (
    "UPDATE sites SET last_heartbeat_at = v.beat_at "
    "FROM json_to_recordset($1::json) AS v(cri varchar, provider_id varchar, beat_at bigint) "
    "WHERE sites.cri = v.cri AND sites.provider_id = v.provider_id AND sites.status = 'active' "
    "AND (sites.last_heartbeat_at IS NULL OR sites.last_heartbeat_at < v.beat_at) "
    "RETURNING v.cri, v.provider_id"
)

_Beat = tuple[str, str, int, "asyncio.Future[bool]"]


@dataclass
class HeartbeatWriter:
    """Writes heartbeats: alone, or on PostgreSQL grouped with those arriving during the previous group's write."""

    sessions: async_sessionmaker[AsyncSession]
    _queue: list[_Beat] = field(default_factory=list)
    _writer: asyncio.Task[None] | None = None
    #: groups written and heartbeats in them (what the grouping saved: beats - groups statements)
    groups: int = 0
    beats: int = 0

    def _engine(self) -> AsyncEngine | None:
        bind = self.sessions.kw.get("bind")
        return bind if isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql" else None

    async def beat(self, cri: str, provider_id: str, at: int) -> bool:
        """Move site `cri` of `provider_id` (active) to `at` if that is later than its stored heartbeat; True when
        this heartbeat moved it."""
        engine = self._engine()
        if engine is None:
            return await self._alone(cri, provider_id, at)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((cri, provider_id, at, done))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain(engine))
        return await done

    async def _alone(self, cri: str, provider_id: str, at: int) -> bool:
        params = {"beat_cri": cri, "beat_provider": provider_id, "beat_at": at}
        return await execute_alone(self.sessions, HEARTBEAT, params) == 1

    async def _drain(self, engine: AsyncEngine) -> None:
        """Write groups until no heartbeat is waiting."""
        try:
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    moved = await self._write_group(engine, group)
                except Exception:
                    await asyncio.gather(*(self._retry_alone(beat) for beat in group))
                    continue
                for index, (_cri, _provider, _at, done) in enumerate(group):
                    if not done.done():
                        done.set_result(index in moved)
        finally:
            self._writer = None

    async def _write_group(self, engine: AsyncEngine, group: list[_Beat]) -> set[int]:
        """One UPDATE for the group; the indexes (in `group`) of the heartbeats that moved their site. Of several
        heartbeats of one site in a group only the latest is written (the others are older, or its replays)."""
        latest: dict[tuple[str, str], int] = {}
        for index, (cri, provider, at, _done) in enumerate(group):
            best = latest.get((cri, provider))
            if best is None or at > group[best][2]:
                latest[(cri, provider)] = index
        keys = sorted(latest)  # one order for every group: concurrent groups lock their sites in the same order
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            beats = [{"cri": k[0], "provider_id": k[1], "beat_at": group[latest[k]][2]} for k in keys]
            rows = await driver.fetch(GROUP_SQL, json.dumps(beats))
        self.groups += 1
        self.beats += len(group)
        return {latest[(row[0], row[1])] for row in rows}

    async def _retry_alone(self, beat: _Beat) -> None:
        cri, provider, at, done = beat
        try:
            moved = await self._alone(cri, provider, at)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        if not done.done():
            done.set_result(moved)
