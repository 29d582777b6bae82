"""SCU orders across exchanges: an order in SCU (A100-equivalents) is filled by several exchanges' pools, the
fill is tracked in SCU at the buyer's exchange, and it is never over- or under-filled."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from exchange.services.snapshot import OrderRow, market_order
from exchange.storage.orders import Order
from identifiers.catalogue import load_catalogue
from identifiers.ids import new_id_str
from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"  # 3.1712 SCU per device
MI300X = "AMD-MI300X"  # 4.1891 SCU per device


def seed_scu_order(ex: Exchange, scu: str, models: list[str], limit_fen_per_scu_hour: int) -> str:
    """An open SCU order at `ex` (quantity in SCU, limit per SCU-hour), as the order API stores it; its id."""
    spec: dict[str, Any] = {
        "quantity_scu": scu,
        "models": models,
        "duration_seconds": 3600,
        "limit_fen_per_scu_hour": limit_fen_per_scu_hour,
        "billing_mode": "per_minute",
        "all_or_nothing": True,
    }
    with ex.seed() as s:
        buyer = fedkit.seed_buyer(s)
        oid = new_id_str()
        s.add(
            Order(
                id=oid, buyer_id=buyer, idempotency_key=oid, request_hash="0" * 64, spec=spec,
                billing_mode="per_minute", status="open", quantity_devices=None, filled_devices=0,
                created_at=int(time.time()),
            )
        )  # fmt: skip
    return oid


def scu_row(ex: Exchange, order_id: str) -> tuple[str, str | None, int]:
    with ex.seed() as s:
        o = s.get(Order, order_id)
        assert o is not None
        return o.status, o.filled_scu, o.filled_devices


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


async def test_hub_member_forwards_its_scu_orders_itself(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"], federation_forward_after_seconds=0, federation_hub="H") as (
        a,
        b,
    ):
        scu_order = seed_scu_order(a, "6", [H100], limit_fen_per_scu_hour=1000)
        with a.seed() as s:
            device_order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        await fedkit.publish_all([a, b])
        await a.fed._forward_tick()  # the member's background forward step
        status, filled_scu, devices = scu_row(a, scu_order)
        assert (status, filled_scu, devices) == ("filled", str(2 * Decimal("3.1712")), 2)
        assert fedkit.order_row(a.db_url, device_order)["status"] == "open"  # left for the hub to route
        assert a.fed.ctx.client.sent["order_offer"] == 1


def test_local_clearing_sees_only_the_scu_not_filled_elsewhere() -> None:
    spec = {"quantity_scu": "12", "models": [H100], "duration_seconds": 3600, "limit_fen_per_scu_hour": 1000}
    row = OrderRow("o", "b", "partially_filled", spec, None, 2, None, 0, None, filled_scu="6.3424")
    order = market_order(row, 0, load_catalogue())
    assert not isinstance(order, str) and order.quantity_scu == Decimal("5.6576")
    done = OrderRow("o", "b", "partially_filled", spec, None, 4, None, 0, None, filled_scu="12.6848")
    assert market_order(done, 0, load_catalogue()) == "already_filled"
