"""A regional hub under a national hub (specs/federation.md 9.3, "hubs under hubs"), in-process exchanges on
loopback: N (national hub) with buyer member A and regional hub R; B and C are members of R. R sends N the
aggregate of B's and C's curves; N routes A's order to R as owner; R clears it again on B's and C's curves
and answers `rerouted`, so A holds and commits with B and C directly (two-party contracts, R holds nothing)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.federation import fedkit

H100 = "NV-H100-SXM"


async def test_regional_hub_reclears_the_parents_route_on_its_members_curves(tmp_path: Path) -> None:
    hub = {"federation_hub_mode": True, "federation_hub_round_interval_seconds": 0}
    n = await fedkit.start_exchange(tmp_path, "N", **hub)
    r = await fedkit.start_exchange(tmp_path, "R", federation_hub="N", **hub)
    a = await fedkit.start_exchange(tmp_path, "A", federation_hub="N", federation_forward_after_seconds=0)
    b = await fedkit.start_exchange(tmp_path, "B", federation_hub="R")
    c = await fedkit.start_exchange(tmp_path, "C", federation_hub="R")
    everyone = [n, r, a, b, c]
    try:
        await fedkit.peer_all(everyone)
        with b.seed() as s:
            pool_b = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=4, ask_fen=1500)
        with c.seed() as s:
            pool_c = fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=4, ask_fen=2000)
            fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=4, ask_fen=2900, operator="PR2")
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=6, models=[H100], limit_fen=3000)
        for m in (b, c):
            assert (await m.svc.hub.publish())["status"] == "sent"
        assert (await r.svc.hub.publish())["status"] == "sent"  # the aggregate of B and C, up to N
        assert (await a.svc.hub.publish())["orders"] == 1
        assert sorted(n.svc.hub.supply) == ["A", "R"] and n.svc.hub.supply["R"].via == ("B", "C")
        cleared = await n.svc.hub.hub_round()
        assert cleared["status"] == "cleared" and cleared["orders"] == 1

        deadline = time.monotonic() + 20
        while fedkit.order_row(a.db_url, order)["status"] != "filled":
            assert time.monotonic() < deadline, "A's order was not filled through the regional hub"
            await asyncio.sleep(0.05)
        # R placed N's route on its members: B's 4 at 1500, then 2 of C's at 2000 (not the 2900 step)
        bought = sorted((x["peer"], x["devices"]) for x in await a.fed.reads.contracts_view())
        assert bought == [("B", 4), ("C", 2)]
        assert sum(x.devices for x in fedkit.contracts_on_pool(b.db_url, pool_b.pool_id)) == 4
        assert sum(x.devices for x in fedkit.contracts_on_pool(c.db_url, pool_c.pool_id)) == 2
        assert await r.fed.reads.contracts_view() == [] and await r.fed.inbound.holds_view() == []
        assert r.svc.hub.counts["rerouted_down"] == 1
        sent = a.fed.ctx.client.sent
        assert (sent["order_offer"], sent["hold_commit"]) == (3, 2)  # R (rerouted), B, C; commits to B and C
    finally:
        for ex in everyone:
            await fedkit.stop_exchange(ex)
