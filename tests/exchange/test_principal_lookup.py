"""The key cache's miss path (ParticipantService.principal_by_key_id): the same principal as the participant row,
None for an unknown key, and on PostgreSQL one statement alone (one round trip, no BEGIN/ROLLBACK)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from exchange.bench.fleet import _keyid, seed_fleet
from exchange.bench.roundtrips import _port, counting_writes
from exchange.composition import build_services
from exchange.services.participants import principal_of
from exchange.settings import Settings
from exchange.storage.participants import Participant


async def test_principal_by_key_id_is_the_participant_in_one_round_trip(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    fleet = await seed_fleet(url, tmp_path / "keys", 2)
    svc = await build_services(Settings(database_url=url, key_dir=tmp_path / "keys"))
    try:
        keyids = [_keyid(site.key) for site in fleet.sites]
        async with svc.sessions() as session:
            rows = (await session.scalars(select(Participant).where(Participant.key_id.in_(keyids)))).all()
            expected = {row.key_id: principal_of(row) for row in rows}
        await svc.participants.principal_by_key_id(keyids[0])  # a pooled connection, the statement prepared
        with counting_writes(int(_port(url)) if backend == "pg" else -1) as writes:
            found = {k: await svc.participants.principal_by_key_id(k) for k in keyids}
            assert await svc.participants.principal_by_key_id("0" * 16) is None
        assert found == expected and len(found) == 2
        if backend == "pg":
            assert writes[0] == 3  # one round trip each
    finally:
        await svc.close()
