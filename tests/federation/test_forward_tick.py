"""The forwarder's background pass is cheap when there is nobody to forward to (it runs every tick)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"


@contextlib.contextmanager
def counted_statements(ex: Exchange) -> Iterator[list[str]]:
    """Every SQL query the exchange's engine runs inside the block (transaction control not counted)."""
    seen: list[str] = []
    engine = ex.svc.engine
    assert engine is not None

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


def seed_open_orders(ex: Exchange, n: int) -> None:
    """`n` open H100 orders that the local market cannot fill (it has no pools)."""
    with ex.seed() as s:
        buyer = fedkit.seed_buyer(s)
        for _ in range(n):
            fedkit.seed_order(s, buyer, devices=4, models=[H100], limit_fen=3000)


async def test_no_peers_tick_reads_no_orders(tmp_path: Path) -> None:
    ex = await fedkit.start_exchange(tmp_path, "A", federation_forward_after_seconds=0)
    try:
        seed_open_orders(ex, 30)
        with counted_statements(ex) as seen:
            assert await ex.fed.outbound.forward_open_orders() == []
        # the peers and summaries lookups only: no order read, no per-order forward attempt
        assert len(seen) <= 2, seen
        assert not any("FROM orders" in s for s in seen)
        assert ex.fed.outbound.orders_forwarded == 0
    finally:
        await fedkit.stop_exchange(ex)


async def test_peer_without_fitting_capacity_gets_no_offers(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"], federation_forward_after_seconds=0) as (a, b):
        with b.seed() as s:  # B has Ascend only: its summary cannot fill an H100 order
            fedkit.seed_pool(s, "B", region="CN-NM", model="HW-910B3", devices=8, ask_fen=900)
        seed_open_orders(a, 30)
        await fedkit.publish_all([a, b])
        with counted_statements(a) as seen:
            assert await a.fed.outbound.forward_open_orders() == []
        assert a.fed.ctx.client.sent["order_offer"] == 0
        assert a.fed.outbound.orders_forwarded == 0
        # one read of summaries and of the open orders, independent of how many orders are open
        assert len(seen) <= 4, seen
