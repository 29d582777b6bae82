"""The coupled hub protocol between in-process exchanges on loopback (specs/federation.md 9.3): members
send every open order, the hub clears the whole fabric at once and routes fills to the owners (the
buyer's own exchange included), members clear what was routed back in a restricted round; and a
forwarded order is placed and priced at the owner by the same engine and rule as a local order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from exchange.storage.contracts import Contract
from exchange.storage.rounds import Round
from federation.peering import envelope_json
from tests.federation import fedkit

H100, H20 = "NV-H100-SXM", "NV-H20"


async def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_coupled_hub_gives_local_capacity_to_the_higher_value_remote_order(tmp_path: Path) -> None:
    async with fedkit.hub_fabric(tmp_path, ["A", "B"], federation_hub_coupled=True) as (h, members):
        a, b = members
        with a.seed() as s:
            h100 = fedkit.seed_pool(s, "A", region="CN-SH", model=H100, devices=4, ask_fen=1000)
            h20 = fedkit.seed_pool(s, "A", region="CN-SH", model=H20, devices=2, ask_fen=500, operator="PR2")
            buyer = fedkit.seed_buyer(s)
            low = fedkit.seed_order(s, buyer, devices=4, models=[H100], limit_fen=1200)  # A's own, low value
            local = fedkit.seed_order(s, buyer, devices=2, models=[H20], limit_fen=800)
        with b.seed() as s:
            high = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=4, models=[H100], limit_fen=3000)
        for m in members:
            assert (await m.svc.hub.publish())["status"] == "sent"
        cleared = await h.svc.hub.hub_round()
        assert cleared["status"] == "cleared" and cleared["orders"] == 3 and cleared["routes"] == 2
        await _until(lambda: fedkit.order_row(b.db_url, high)["status"] == "filled")
        await _until(lambda: fedkit.order_row(a.db_url, local)["status"] == "filled")
        # one merged clearing: A's H100s go to B's 3000 fen order, not to A's own 1200 fen one
        assert [c.devices for c in fedkit.contracts_on_pool(a.db_url, h100.pool_id)] == [4]
        assert fedkit.order_row(a.db_url, low)["status"] == "open"
        assert (await b.fed.reads.contracts_view())[0]["peer"] == "A"
        # the route back to A's own capacity was cleared by A's own round, restricted to the routed order
        with a.seed() as s:
            made = s.scalars(select(Contract).where(Contract.pool_id == h20.pool_id)).all()
            assert [(c.order_id, c.devices) for c in made] == [(local, 2)]
            rounds = s.scalars(select(Round)).all()
            assert [(r.trigger, r.orders_count) for r in rounds] == [("hub", 1)]
        # the next hub round waits until every member reported this round's routes done, and published after
        assert (await h.svc.hub.hub_round())["status"] == "waiting"
        for m in members:
            await _until(lambda m=m: bool(m.svc.hub._done_round == 1))  # type: ignore[misc]
            await m.svc.hub.publish()
        assert (await h.svc.hub.hub_round())["status"] == "waiting"  # reports seen; now fresh curves are due
        for m in members:
            await m.svc.hub.publish()
        again = await h.svc.hub.hub_round()
        assert again["status"] == "cleared" and again["orders"] == 1 and again["routes"] == 0


async def test_forwarded_order_is_priced_by_the_local_rounds_rule(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["X", "O"], fee_bps=100) as (x, o):
        with o.seed() as s:
            pool = fedkit.seed_pool(s, "O", region="CN-NM", model=H100, devices=4, ask_fen=1000)
            local = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        with x.seed() as s:
            remote = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        await fedkit.publish_all([x, o])
        assert [r["status"] for r in await x.fed.outbound.forward_open_orders([remote])] == ["committed"]
        await o.svc.rounds.run_round("test")
        assert fedkit.order_row(o.db_url, local)["status"] == "filled"
        rows = fedkit.contracts_on_pool(o.db_url, pool.pool_id)
        prices = {c.round_id is None: (c.buyer_price_fen, c.provider_price_fen) for c in rows}
        # the same rule for both: provider at the ask (supply left over), buyer pays it plus the 1% fee
        # (the old immediate matching gave the peer's buyer the bare ask)
        assert prices == {True: (1010, 1000), False: (1010, 1000)}
        signed = envelope_json((await x.fed.reads.contracts_view())[0]["envelope"])  # as both exchanges signed it
        assert (signed["buyer_price_fen"], signed["provider_price_fen"]) == (1010, 1000)
