"""End to end through the HTTP API, on SQLite and PostgreSQL: order -> contract -> signed usage ->
settlement in each billing mode, with the fen amounts worked out by hand, and every record proven to be
in the latest signed checkpoint.

The contracts are made by ContractService.create_from_match, standing in for a clearing round. Every
contract uses fee_bps=250 (2.5 %) so the fee rounding is visible. Times are China Standard Time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import Market, assert_included, cst, make_market

pytestmark = pytest.mark.slow
HOUR = 3600
DAY = 86400


@pytest.fixture
async def market(db: Any, aiohttp_client: Any, tmp_path: Path) -> Market:
    api = await make_api(db, aiohttp_client, tmp_path)
    return await make_market(api, clock_at=cst(2026, 3, 1))


def postings(r: dict[str, Any]) -> tuple[int, int, int]:
    return r["buyer_debit_fen"], r["provider_credit_fen"], r["fee_fen"]


async def test_per_minute(market: Market) -> None:
    t0 = cst(2026, 3, 2, 9)
    c = await market.contract("per_minute", devices=4, start=t0, end=t0 + 3 * HOUR, buyer_price_fen=2999, fee_bps=250)
    assert c["status"] == "pending" and c["log_index"] is not None
    market.clock.now = t0 - 60
    assert (await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm"))["status"] == "confirmed"
    market.clock.now = t0 + 2 * HOUR + 5
    first = await market.usage(c["id"], "node-1", 1, t0, t0 + HOUR, 240)  # 4 devices x 60 min
    assert market.provider.last_status == 201
    await market.usage(c["id"], "node-1", 2, t0 + HOUR, t0 + 2 * HOUR, 217)
    again = await market.usage(c["id"], "node-1", 1, t0, t0 + HOUR, 240)  # a retry: idempotent
    assert market.provider.last_status == 200 and again["id"] == first["id"] and again["status"] == "duplicate"

    market.clock.now = t0 + 3 * HOUR + 60
    batch = await market.settle()
    [rec] = batch["records"]
    # 240 + 217 = 457 device-minutes x 2999 fen/device-hour / 60 = 1370543 / 60 = 22842.38 -> 22842 fen
    # fee 2.5 %: 22842 x 250 / 10000 = 571.05 -> 571; provider 22842 - 571 = 22271
    assert postings(rec) == (22842, 22271, 571)
    assert rec["device_minutes"] == 457 and len(rec["usage_ids"]) == 2
    assert (await market.settle())["count"] == 0  # nothing new: a second run writes nothing
    contract = await market.buyer.request("GET", f"/v1/contracts/{c['id']}")
    assert contract["status"] == "completed"
    await assert_included(market, [c, first, rec])


async def test_compute_tier_across_a_month_boundary(market: Market) -> None:
    start, end = cst(2026, 3, 31, 14), cst(2026, 4, 1, 10)  # 20 h, 10 in March and 10 in April
    c = await market.contract("compute_tier", devices=16, start=start, end=end, fee_bps=250)
    # NV-H100-SXM is 3.1712 SCU per device (catalogue); tier 'standard' is 200 fen per SCU-hour
    assert c["billing_terms"] == {"tier": "standard", "price_fen_per_scu_hour": 200, "scu_per_device": "3.1712"}
    market.clock.now = start
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    mid = cst(2026, 4, 1)
    market.clock.now = end
    u1 = await market.usage(c["id"], "node-1", 1, start, mid, 9600)  # 16 devices x 600 min
    u2 = await market.usage(c["id"], "node-1", 2, mid, end, 9600)
    batch = await market.settle(end)
    march, april = sorted(batch["records"], key=lambda r: r["period_start"])
    # March: 9600 x 3.1712 / 60 = 507.392 SCU-h, all in the first band: 507.392 x 200 = 101478.4 -> 101478
    #   fee 101478 x 0.025 = 2536.95 -> 2537; provider 98941
    assert postings(march) == (101478, 98941, 2537)
    # April: cumulative 507.392 -> 1014.784 SCU-h: 492.608 x 200 = 98521.6 below 1000 SCU-h,
    #   14.784 x 200 x 0.95 = 2808.96 above: 101330.56 -> 101331; fee 2533.275 -> 2533; provider 98798
    assert postings(april) == (101331, 98798, 2533)
    # the whole 20 h as one period: 200000 + 2808.96 = 202808.96 -> 202809 = 101478 + 101331 (no drift here)
    assert march["buyer_debit_fen"] + april["buyer_debit_fen"] == 202809
    assert march["period_end"] == april["period_start"] == mid
    await assert_included(market, [c, u1, u2, march, april])


async def test_subscription_prorated(market: Market) -> None:
    start, end = cst(2026, 3, 21), cst(2026, 5, 11)
    terms = {"period": "monthly", "price_fen_per_device": 1_000_000}  # the order's form: 'period'
    c = await market.contract("subscription", devices=2, start=start, end=end, billing_terms=terms, fee_bps=250)
    assert c["billing_terms"] == {"interval": "month", "price_fen_per_device": 1_000_000}
    market.clock.now = start
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    market.clock.now = cst(2026, 4, 15)
    early = await market.settle()
    [mar] = early["records"]  # April has not ended yet
    # March: 11 of 31 days: 1000000 x 2 x 11 / 31 = 709677.42 -> 709677; fee 17741.925 -> 17742; provider 691935
    assert postings(mar) == (709677, 691935, 17742)
    market.clock.now = end + 1
    late = await market.settle()
    apr, may = sorted(late["records"], key=lambda r: r["period_start"])
    # April: whole month: 2000000; fee 50000; provider 1950000
    assert postings(apr) == (2_000_000, 1_950_000, 50_000)
    # May: 10 of 31 days: 20000000 / 31 = 645161.29 -> 645161; fee 16129.025 -> 16129; provider 629032
    assert postings(may) == (645161, 629032, 16129)
    assert may["detail"]["covered_seconds"] == 10 * DAY and may["detail"]["period_seconds"] == 31 * DAY
    await assert_included(market, [c, mar, apr, may])


async def test_project_milestones(market: Market) -> None:
    t0 = cst(2026, 3, 2)
    terms = {
        "fixed_price_fen": 1_000_001,
        "milestones": [
            {"name": "design", "share_bps": 3333, "due_at": t0 + DAY},
            {"name": "build", "share_bps": 3333, "due_at": t0 + 2 * DAY},
            {"name": "test", "share_bps": 3333, "due_at": t0 + 3 * DAY},
            {"name": "handover", "share_bps": 1, "due_at": t0 + 4 * DAY},
        ],
    }
    c = await market.contract("project", devices=8, start=t0, end=t0 + 4 * DAY, billing_terms=terms, fee_bps=250)
    market.clock.now = t0
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    market.clock.now = t0 + 2 * DAY + HOUR
    first = (await market.settle())["records"]
    market.clock.now = t0 + 4 * DAY
    rest = (await market.settle())["records"]
    recs = sorted(first + rest, key=lambda r: r["period_start"])
    assert [r["detail"]["milestone"] for r in recs] == ["design", "build", "test", "handover"]
    # Rounded on the cumulative share of 1000001 fen:
    #   33.33 %: 333300.33 -> 333300; 66.66 %: 666600.67 -> 666601; 99.99 %: 999900.9999 -> 999901; 100 %: 1000001
    #   amounts 333300, 333301, 333300, 100 (sum 1000001)
    # fees at 2.5 %: 8332.5 -> 8332 (tie, even); 8332.525 -> 8333; 8332.5 -> 8332; 2.5 -> 2 (tie, even)
    assert [postings(r) for r in recs] == [
        (333300, 324968, 8332),
        (333301, 324968, 8333),
        (333300, 324968, 8332),
        (100, 98, 2),
    ]
    assert sum(r["buyer_debit_fen"] for r in recs) == 1_000_001
    await assert_included(market, [c, *recs])
