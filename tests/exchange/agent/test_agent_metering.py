"""The agent meters a contract through the real API (SQLite and PostgreSQL) on a stepped clock: it confirms
the contract, reports contiguous signed periods (batched when the exchange has POST /v1/usage/batch, one
per request otherwise), a failed device lowers the minutes, and settlement equals the metered minutes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from exchange.agent.discovery import SimulatedSource
from exchange.agent.runner import Agent
from exchange.billing.per_minute import per_minute_fen
from tests.exchange.agent.agentkit import simulated_config
from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import make_market


async def test_metered_minutes_settle_exactly(db: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    api = await make_api(db, aiohttp_client, tmp_path)
    t0 = (int(time.time()) // 60 + 1) * 60
    market = await make_market(api, clock_at=t0 - 30)
    [site] = (await market.provider.request("GET", "/v1/sites"))["sites"]
    c = await market.contract("per_minute", devices=8, start=t0, end=t0 + 1_800, buyer_price_fen=2_999)
    cfg, state = simulated_config(
        tmp_path,
        api.base_url,
        site["cri"],
        {"NV-H100-SXM": 16},
        auto_confirm=True,
        period_seconds=300,
        skew_alarm_seconds=86_400,  # the stepped clock runs ahead of the HTTP Date on purpose
    )
    agent = Agent(cfg, market.provider, SimulatedSource(state), clock=market.clock)
    try:
        for minute in range(-1, 32):
            market.clock.now = t0 + 60 * minute
            if minute == 10:  # 9 of 16 healthy: the contract gets 8 until ...
                state.write_text(
                    json.dumps(
                        {
                            "devices": [{"model": "NV-H100-SXM", "count": 16}],
                            "failed": [f"sim-NV-H100-SXM-{i}" for i in range(7)],
                        }
                    )
                )
            if minute == 20:  # ... only 6 are left for 5 minutes
                state.write_text(json.dumps({"devices": [{"model": "NV-H100-SXM", "count": 6}]}))
            if minute == 25:
                state.write_text(json.dumps({"devices": [{"model": "NV-H100-SXM", "count": 16}]}))
            await agent.step(heartbeat=minute in (-1, 0))
        assert agent.journal.depth() == 0
        routes = {r.resource.canonical for r in api.http.server.app.router.routes() if r.resource is not None}
        assert agent.batch_endpoint == ("/v1/usage/batch" in routes)  # batched when the exchange can
        usage = (await market.provider.request("GET", f"/v1/contracts/{c['id']}/usage"))["items"]
        assert [u["seq"] for u in usage] == [1, 2, 3, 4, 5, 6] and all(u["flags"] == [] for u in usage)
        assert [u["period_end"] - u["period_start"] for u in usage] == [300] * 6
        # 8 devices x 30 min, less 2 devices x 5 min (a scan stands for the minute before it: 19..24)
        assert (
            sum(u["device_minutes"] for u in usage)
            == 8 * 30 - 2 * 5
            == agent.journal.totals()[c["id"]]["sent_device_minutes"]
        )
        assert [u["availability_bps"] for u in usage] == [10_000, 10_000, 10_000, 9_500, 8_000, 10_000]
        market.clock.now = t0 + 1_900
        [record] = (await market.settle())["records"]
        assert record["device_minutes"] == 230
        assert record["buyer_debit_fen"] == per_minute_fen(2_999, 230)
    finally:
        agent.journal.close()


async def test_a_contract_that_ended_while_away_does_not_block_the_others(
    db: Any, aiohttp_client: Any, tmp_path: Path, caplog: Any
) -> None:
    api = await make_api(db, aiohttp_client, tmp_path)
    t0 = (int(time.time()) // 60 + 1) * 60
    market = await make_market(api, clock_at=t0 - 30)
    [site] = (await market.provider.request("GET", "/v1/sites"))["sites"]
    current = await market.contract("per_minute", devices=2, start=t0, end=t0 + 600)
    market.clock.now += 1  # listed newest first: the ended one comes first, as it would block the rest
    # made while the node was cut off: ended before the agent could confirm it (the exchange refuses that now)
    ended = await market.contract("per_minute", devices=2, start=t0 - 600, end=t0 - 60)
    listed = (await market.provider.request("GET", "/v1/contracts", params={"limit": 100}))["items"]
    assert [c["id"] for c in listed] == [ended["id"], current["id"]]
    cfg, state = simulated_config(
        tmp_path, api.base_url, site["cri"], {"NV-H100-SXM": 4}, auto_confirm=True, skew_alarm_seconds=86_400
    )
    # the node's clock runs 100 s behind (under the alarm): to it the ended contract is still on, so it asks
    agent = Agent(cfg, market.provider, SimulatedSource(state), clock=lambda: market.clock() - 100)
    try:
        for _ in range(2):
            await agent.step(heartbeat=True)
        statuses = {c["id"]: c["status"] for c in (await market.provider.request("GET", "/v1/contracts"))["items"]}
        assert statuses == {ended["id"]: "pending", current["id"]: "confirmed"}
        assert current["id"] in agent.states and ended["id"] not in agent.states
        refused = [r for r in caplog.records if r.getMessage() == "confirm_refused"]
        assert len(refused) == 1  # asked once, refused (409), never asked again
    finally:
        agent.journal.close()
