"""SCU orders across exchanges: an order in SCU (A100-equivalents) is filled by several exchanges' pools, the
fill is tracked in SCU at the buyer's exchange, and it is never over- or under-filled."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from exchange.services.snapshot import OrderRow, market_order
from identifiers.catalogue import load_catalogue
from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"  # 3.1712 SCU per device
MI300X = "AMD-MI300X"  # 4.1891 SCU per device


def seed_scu_order(ex: Exchange, scu: str, models: list[str], limit_fen_per_scu_hour: int) -> str:
    """An open SCU order at `ex` (quantity in SCU, limit per SCU-hour); its id."""
    with ex.seed() as s:
        buyer = fedkit.seed_buyer(s)
        return fedkit.seed_scu_order(s, buyer, scu=scu, models=models, limit_fen_per_scu_hour=limit_fen_per_scu_hour)


def scu_row(ex: Exchange, order_id: str) -> tuple[str, str | None, int]:
    return fedkit.scu_fill(ex.db_url, order_id)


async def test_scu_order_filled_by_two_owners_exactly(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"], federation_forward_after_seconds=0) as (a, b, c):
        order = seed_scu_order(a, "12", [H100, MI300X], limit_fen_per_scu_hour=1000)
        with b.seed() as s:  # 2 x 3.1712 = 6.3424 SCU: not enough alone
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=2, ask_fen=2000)
        with c.seed() as s:  # 8 x 4.1891 SCU free, of which 2 devices cover the remaining 5.6576
            fedkit.seed_pool(s, "C", region="CN-GZ", model=MI300X, devices=8, ask_fen=2600)
        await fedkit.publish_all([a, b, c])

        (result,) = await a.fed.outbound.forward_open_orders()
        assert result["status"] == "committed" and result["holds"] == 2
        status, filled_scu, devices = scu_row(a, order)
        assert (status, devices) == ("filled", 4)
        assert Decimal(filled_scu or "0") == 2 * Decimal("3.1712") + 2 * Decimal("4.1891")
        # never over: one device fewer at the second owner would not reach 12 SCU
        assert Decimal(filled_scu or "0") - Decimal("4.1891") < 12
        bought = sorted((x["peer"], x["model"], x["devices"]) for x in await a.fed.reads.contracts_view())
        assert bought == [("B", H100, 2), ("C", MI300X, 2)]
        for owner, model in ((b, H100), (c, MI300X)):
            (sold,) = await owner.fed.reads.contracts_view(peer="A")
            assert (sold["side"], sold["model"], sold["devices"]) == ("owner", model, 2)
        # filled: later passes leave it alone, and local clearing sees nothing left of it
        assert await a.fed.outbound.forward_open_orders() == []
        assert await a.fed.outbound.forward_order(order) == {"status": "skipped"}


async def test_scu_order_not_reachable_across_exchanges_is_not_filled_at_all(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"], federation_forward_after_seconds=0) as (a, b, c):
        order = seed_scu_order(a, "12", [H100, MI300X], limit_fen_per_scu_hour=1000)
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=1, ask_fen=2000)
        with c.seed() as s:
            fedkit.seed_pool(s, "C", region="CN-GZ", model=MI300X, devices=1, ask_fen=2600)
        await fedkit.publish_all([a, b, c])

        (result,) = await a.fed.outbound.forward_open_orders()
        # 3.1712 + 4.1891 SCU could be held, short of 12: all or nothing, so every hold is released
        assert (result["status"], result["needed"]) == ("unfilled", "12") and Decimal(result["held"]) < 12
        assert scu_row(a, order) == ("open", None, 0)
        assert await a.fed.reads.contracts_view() == []
        for owner in (b, c):  # the holds were released: the capacity is free again
            assert {h["status"] for h in await owner.fed.inbound.holds_view()} <= {"released"}


async def test_hub_member_sends_its_scu_orders_to_the_hub_not_to_peers(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"], federation_forward_after_seconds=0, federation_hub="H") as (
        a,
        b,
    ):
        scu_order = seed_scu_order(a, "6", [H100], limit_fen_per_scu_hour=1000)
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        await fedkit.publish_all([a, b])
        await a.fed._forward_tick()  # the member's background forward step: the hub plans SCU orders too
        assert scu_row(a, scu_order) == ("open", None, 0)
        assert a.fed.ctx.client.sent["order_offer"] == 0
        (sent,) = await a.svc.hub.unmet_demand()
        assert (sent.id, sent.quantity_scu, sent.quantity_devices) == (scu_order, Decimal(6), None)
        assert sent.limit_fen_per_scu_hour == 1000


async def test_scu_order_through_the_hub_filled_by_two_owners_exactly(tmp_path: Path) -> None:
    async with fedkit.hub_fabric(tmp_path, ["A", "B", "C"], federation_forward_after_seconds=0) as (h, members):
        a, b, c = members
        order = seed_scu_order(a, "12", [MI300X], limit_fen_per_scu_hour=1000)  # ceil(12 / 4.1891) = 3 devices
        with b.seed() as s:  # 2 cheap devices: not enough alone
            fedkit.seed_pool(s, "B", region="CN-NM", model=MI300X, devices=2, ask_fen=2000)
        with c.seed() as s:
            fedkit.seed_pool(s, "C", region="CN-GZ", model=MI300X, devices=8, ask_fen=2600)
        for m in members:
            assert (await m.svc.hub.publish())["status"] == "sent"
        cleared = await h.svc.hub.hub_round()
        assert cleared["status"] == "cleared" and (cleared["orders"], cleared["routes"]) == (1, 2)
        deadline = time.monotonic() + 20
        while scu_row(a, order)[0] != "filled":
            assert time.monotonic() < deadline, "the SCU order was not filled through the hub"
            await asyncio.sleep(0.05)
        _status, filled_scu, devices = scu_row(a, order)
        assert devices == 3 and Decimal(filled_scu or "0") == 3 * Decimal("4.1891")
        assert Decimal(filled_scu or "0") - Decimal("4.1891") < 12  # a device fewer would not reach it: exact
        bought = sorted((x["peer"], x["model"], x["devices"]) for x in await a.fed.reads.contracts_view())
        assert bought == [("B", MI300X, 2), ("C", MI300X, 1)]
        for owner, n in ((b, 2), (c, 1)):
            (sold,) = await owner.fed.reads.contracts_view(peer="A")
            assert (sold["side"], sold["devices"]) == ("owner", n)
        assert a.fed.ctx.client.sent["order_offer"] == 2 and a.fed.ctx.client.sent["hold_commit"] == 2
        # filled: the next demand to the hub no longer carries it
        assert await a.svc.hub.unmet_demand() == []


def test_local_clearing_sees_only_the_scu_not_filled_elsewhere() -> None:
    spec = {"quantity_scu": "12", "models": [H100], "duration_seconds": 3600, "limit_fen_per_scu_hour": 1000}
    row = OrderRow("o", "b", "partially_filled", spec, None, 2, None, 0, None, filled_scu="6.3424")
    order = market_order(row, 0, load_catalogue())
    assert not isinstance(order, str) and order.quantity_scu == Decimal("5.6576")
    done = OrderRow("o", "b", "partially_filled", spec, None, 4, None, 0, None, filled_scu="12.6848")
    assert market_order(done, 0, load_catalogue()) == "already_filled"
