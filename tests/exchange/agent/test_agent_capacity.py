"""The agent against the real HTTP API (SQLite and PostgreSQL): a failed or removed device takes its
capacity out of the site's offers at once, all devices gone withdraws the offer, devices coming back
restore it; the clock skew to the exchange is measured, alarmed, and corrects the meter's clock."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from exchange.agent.discovery import SimulatedSource
from exchange.agent.runner import Agent
from tests.exchange.agent.agentkit import simulated_config
from tests.exchange.registration_support import make_api


async def node(db: Any, aiohttp_client: Any, tmp_path: Path, *, clock: Any = time.time) -> tuple[Agent, Any, Path]:
    api = await make_api(db, aiohttp_client, tmp_path)
    provider = await api.provider()
    site = await provider.add_site("CN-SH", "DC 1")
    pool = await provider.add_pool(site["cri"], "HW-910B3", 8, devices_per_node=8)
    now = int(time.time())
    await provider.post_offer(pool["cri"], 8, 900, now - 60, window_end=now + 7200, min_lease_seconds=60)
    cfg, state = simulated_config(tmp_path, api.base_url, site["cri"], {"HW-910B3": 8})
    return Agent(cfg, provider, SimulatedSource(state), clock=clock), provider, state


async def open_offers(provider: Any) -> list[int]:
    return sorted(
        o["devices"] for o in (await provider.request("GET", "/v1/offers", params={"status": "open"}))["offers"]
    )


def set_state(state: Path, **fields: Any) -> None:
    state.write_text(json.dumps({"devices": [{"model": "HW-910B3", "count": 8}], **fields}))


async def test_capacity_follows_the_healthy_devices(db: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    agent, provider, state = await node(db, aiohttp_client, tmp_path)
    await agent.step(heartbeat=True)
    assert await open_offers(provider) == [8]
    set_state(state, failed=["sim-HW-910B3-0"], removed=["sim-HW-910B3-7"])
    await agent.step(heartbeat=False)  # one scan later, before any heartbeat or round
    assert await open_offers(provider) == [6]
    assert agent.metrics.capacity_changes._value.get() == 1
    set_state(state, removed=[f"sim-HW-910B3-{i}" for i in range(8)])
    await agent.step(heartbeat=False)
    assert await open_offers(provider) == []  # withdrawn: nothing left to sell
    set_state(state, failed=["sim-HW-910B3-1"])
    await agent.step(heartbeat=False)
    assert await open_offers(provider) == [7]  # back as a new offer, within the healthy devices
    set_state(state)
    await agent.step(heartbeat=False)
    assert await open_offers(provider) == [8]  # restored to what the provider offered
    assert agent.journal.reduced() == {}
    text = agent.metrics.render().decode()
    assert 'hetex_agent_devices{health="healthy",model="HW-910B3"} 8.0' in text
    assert "hetex_agent_last_heartbeat_timestamp_seconds" in text
    agent.journal.close()


async def test_clock_skew_is_measured_and_corrects_the_clock(db: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    agent, _provider, _state = await node(db, aiohttp_client, tmp_path, clock=lambda: time.time() - 90)
    await agent.measure_skew()
    assert 88 <= agent.skew <= 92
    assert abs(agent.now() - time.time()) <= 2  # periods are cut on the exchange's clock
    assert 88 <= agent.metrics.clock_skew._value.get() <= 92
    agent.journal.close()
