"""The periodic summary publication builds a summary only for peers: with none, nothing is read or stored (a summary
reads every pool's free capacity, a pause of the serving process at fleet scale); with one, it is built and sent."""

from __future__ import annotations

from pathlib import Path

from exchange.storage.federation import CapacitySummaryRow
from tests.federation import fedkit


async def _own_row(ex: fedkit.Exchange) -> CapacitySummaryRow | None:
    async with ex.fed.ctx.sessions() as session:
        return await session.get(CapacitySummaryRow, ex.authority)


async def test_no_peer_no_summary_built_then_one_peer_gets_one(tmp_path: Path) -> None:
    a = await fedkit.start_exchange(tmp_path, "A")
    b = await fedkit.start_exchange(tmp_path, "B")
    try:
        assert await a.fed.summaries.publish_summary() == {}
        assert await _own_row(a) is None
        await fedkit.peer_all([a, b])
        assert await a.fed.summaries.publish_summary() == {"B": "delivered"}
        row = await _own_row(a)
        assert row is not None and row.version == 1
    finally:
        await fedkit.stop_exchange(a)
        await fedkit.stop_exchange(b)
