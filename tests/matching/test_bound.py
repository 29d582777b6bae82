"""The LP bound stays an upper bound when an order may span several pools (max_pools > 1)."""

from __future__ import annotations

import json
from pathlib import Path

from matching.baselines import lp_bound
from matching.clearing import clear
from matching.model import Market

DATA = Path(__file__).parent / "data"


def test_multi_pool_order_may_use_pools_smaller_than_its_share() -> None:
    # O6 wants 3 devices over at most 2 pools; CN-SH has pools of 1 and 2 devices (limit 102, ask 100 fen/h):
    # 1 + 2 devices for one hour is feasible and worth 3 x 2 = 6 fen, so the bound must be at least 6.
    market = Market.from_json(json.loads((DATA / "multi_pool_bound.json").read_text()))
    result = clear(market)
    assert result.stats.welfare_fen == 6
    assert lp_bound(market) >= 6
    assert {(a.pool_id, a.devices) for a in result.allocations if a.order_id == "O6"} == {("P2", 1), ("P3", 2)}
