"""Group append of usage batches (exchange.services.usage.GroupAppender): on PostgreSQL the batches of a process
that have their reports while another batch appends are written by the next leader, in its transaction, with one
counter lock; every batch still gets the outcome it would get alone. SQLite appends each batch alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from exchange.bench.fleet import _keyid, seed_fleet, usage_envelopes
from exchange.composition import Services, build_services
from exchange.services.principals import Principal
from exchange.settings import Settings
from exchange.storage.ledger import LogEntry
from exchange.storage.settlement import UsageReport


async def _fleet_services(url: str, keys: Path, sites: int) -> tuple[Any, Services, list[Principal]]:
    fleet = await seed_fleet(url, keys, sites)
    svc = await build_services(Settings(database_url=url, key_dir=keys))
    callers = []
    for site in fleet.sites:
        principal = await svc.participants.principal_by_key_id(_keyid(site.key))
        assert principal is not None
        callers.append(principal)
    return fleet, svc, callers


async def _counts(svc: Services) -> tuple[int, int]:
    async with svc.sessions() as session:
        reports = await session.scalar(select(func.count()).select_from(UsageReport))
        entries = await session.scalar(select(func.count()).select_from(LogEntry))
    return int(reports or 0), int(entries or 0)


async def test_concurrent_batches_all_land_and_keep_their_rules(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    fleet, svc, callers = await _fleet_services(fresh_db_factory(), tmp_path / "keys", 6)
    try:
        reports0, entries0 = await _counts(svc)
        s0 = fleet.sites[0].contract_start
        first = [usage_envelopes(site, 1, s0, s0 + 60, 4) for site in fleet.sites]
        conflict = usage_envelopes(fleet.sites[1], 1, s0, s0 + 120, 4)  # seq 1 of site 1 again, other body
        results = await asyncio.gather(
            *(svc.usage.report_batch(callers[i], first[i]) for i in range(6)),
            svc.usage.report_batch(callers[0], first[0]),  # the same batch again: duplicates, or accepted first
            svc.usage.report_batch(callers[1], conflict),
            svc.usage.report_batch(callers[2], first[3]),  # site 3's reports sent by site 2's provider
        )
        # site 0's two identical batches: one accepted, one answered duplicate; site 1: one body accepted, the
        # other refused as a conflict; another provider's reports are refused; nothing else is refused
        zero = sorted((results[0]["accepted"], results[6]["accepted"]))
        assert zero == [0, 4] and results[0]["duplicate"] + results[6]["duplicate"] == 4
        one = sorted((results[1]["accepted"], results[7]["accepted"]))
        assert one == [0, 4] and results[1]["refused"] + results[7]["refused"] == 4
        codes = {r["error"]["code"] for res in (results[1], results[7]) for r in res["results"] if "error" in r}
        assert codes == {"usage_conflict"}
        assert results[8]["refused"] == 4 and {r["error"]["code"] for r in results[8]["results"]} == {
            "not_contract_party"
        }
        assert [r["accepted"] for r in results[2:6]] == [4, 4, 4, 4]
        # each report once, each with its own log entry; indexes contiguous and distinct
        assert await _counts(svc) == (reports0 + 24, entries0 + 24)
        indexes = sorted(x["log_index"] for res in results for x in res["results"] if x["status"] == "accepted")
        assert indexes == list(range(indexes[0], indexes[0] + 24))
        assert (await svc.ledger.verify_log()).ok
        if backend == "pg":  # the six batches with accepted reports were written in fewer transactions
            assert svc.usage.appends.batches == 6 and svc.usage.appends.groups < 6
        else:
            assert svc.usage.appends.groups == 0
        # later reports of the same meters are checked against the grouped ones: seq 2 follows, seq 1 is a duplicate
        second = {i: usage_envelopes(fleet.sites[i], 2, s0 + 60, s0 + 120, 4) for i in (2, 3)}
        later = await asyncio.gather(
            *(svc.usage.report_batch(callers[i], second[i]) for i in (2, 3)),
            svc.usage.report_batch(callers[4], first[4]),
        )
        assert [(r["accepted"], r["duplicate"]) for r in later] == [(4, 0), (4, 0), (0, 4)]
        assert all(not x["flags"] for r in later[:2] for x in r["results"])  # in order: no gap, no overlap
    finally:
        await svc.close()


async def test_a_failing_leader_does_not_take_the_group_with_it(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    fleet, svc, callers = await _fleet_services(fresh_db_factory(), tmp_path / "keys", 4)
    try:
        reports0, _entries0 = await _counts(svc)
        s0 = fleet.sites[0].contract_start
        write = svc.usage.appends.write
        failed: list[int] = []

        async def first_group_write_fails(session: Any, checked: list[Any]) -> None:
            if not failed and len(checked) > 4:  # a leader writing other batches' reports with its own
                failed.append(len(checked))
                raise ConnectionResetError("the leader's connection was lost")
            await write(session, checked)

        svc.usage.appends.write = first_group_write_fails
        batches = [usage_envelopes(fleet.sites[i], 1, s0, s0 + 60, 4) for i in range(4)]
        outcomes = await asyncio.gather(
            *(svc.usage.report_batch(callers[i], batches[i]) for i in range(4)),
            return_exceptions=True,
        )
        # the leader whose group write failed answers the error; its group's batches append alone and are stored
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        stored = 3 if backend == "pg" else 4  # SQLite appends every batch alone: no group, no failure
        assert len(errors) == 4 - stored and all(isinstance(e, ConnectionResetError) for e in errors)
        assert [o["accepted"] for o in outcomes if isinstance(o, dict)] == [4] * stored
        assert (await _counts(svc))[0] == reports0 + 4 * stored
        assert (await svc.ledger.verify_log()).ok
        assert len(failed) == (1 if backend == "pg" else 0)
    finally:
        await svc.close()
