"""Key cache invalidation across processes: every `hetex serve` process on PostgreSQL LISTENs on the channel that
the participants trigger (migration 0950) NOTIFYs with a key id whenever a participant row changes or goes, and
drops that key from its cache at once. If the listening connection is lost, the process stops caching keys (every
request then reads its participant) rather than risk serving a suspended key for the cache's lifetime. While it
hears every change, a key stays cached for an hour instead of a minute (a site heartbeating every 30 s would
otherwise miss the cache on every other request)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from exchange.api.auth import KEY_CACHE
from exchange.api.keys import SERVICES

#: the channel migration 0950's trigger notifies (payload: the changed participant's key id)
KEY_CHANGES_CHANNEL = "hetex_participant_keys"

log = logging.getLogger(__name__)


async def listen_for_key_changes(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: on PostgreSQL, hold one pooled connection LISTENing for participant key changes."""
    engine = app[SERVICES].engine
    cache = app[KEY_CACHE]
    if engine is None or engine.dialect.name != "postgresql":
        yield  # SQLite: one serving process; its own changes reach the cache through key_changed
        return
    conn = await engine.connect()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection

    def changed(_conn: Any, _pid: int, _channel: str, key_id: str) -> None:
        cache.drop(key_id)

    def lost(_conn: Any) -> None:
        log.warning("key change notifications lost: participant keys are no longer cached in this process")
        cache.disable()

    await driver.add_listener(KEY_CHANGES_CHANNEL, changed)
    driver.add_termination_listener(lost)
    cache.hearing_changes()  # a change reaches the cache at once, so a key may stay for longer than 60 s
    try:
        yield
    finally:
        driver.remove_termination_listener(lost)
        if not driver.is_closed():
            await driver.remove_listener(KEY_CHANGES_CHANNEL, changed)
        await conn.close()
