"""Soak (--soak): 50 agents with simulated devices against a real `hetex serve` over a compressed market
clock (5 s slots): rounds every few seconds, contracts of 1-3 minutes, usage every 30 s; faults on the way
(agents crashed and restarted, the exchange killed and restarted, devices removed); at the end every
report was delivered exactly once and settlement equals the metered device-minutes exactly.
AGENT_SOAK_SECONDS sets the length of the run (default 600), AGENT_SOAK_OUTAGE how long the
exchange stays unreachable in the middle of it (default 10; 300 for the five-minute outage)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.billing.per_minute import per_minute_fen
from exchange.client import HetexClient
from federation.keys import SigningKey
from tests.exchange.agent.agentkit import ExchangeProc, InProcessAgent, Node, provider_node, wait_for

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]
AGENTS = 50
MODELS = ("NV-H100-SXM", "HW-910B3", "CAM-MLU590", "MT-S4000", "HG-K100-AI")


async def test_fifty_agents_settle_exactly(tmp_path: Path) -> None:
    seconds = int(os.environ.get("AGENT_SOAK_SECONDS", "600"))
    outage = int(os.environ.get("AGENT_SOAK_OUTAGE", "10"))  # seconds the exchange is unreachable
    rng = random.Random(18)
    # every agent here connects from 127.0.0.1: lift the per-address connection cap (32) for the test
    ex = ExchangeProc(tmp_path, http_max_connections_per_address="512")
    await ex.start()
    agents: list[InProcessAgent] = []
    try:
        op = await ex.add_operator()
        nodes: list[Node] = []
        for i in range(AGENTS):
            ex.alive()
            nodes.append(
                await provider_node(
                    ex,
                    tmp_path,
                    f"n{i:02d}",
                    model=MODELS[i % len(MODELS)],
                    devices=8,
                    ask_fen=500 + 10 * i,
                    heartbeat_seconds=5.0,
                    scan_seconds=1.0,
                    period_seconds=30,
                )
            )
        agents = [InProcessAgent(n) for n in nodes]
        for a in agents:
            a.start()
        buyers = []
        for b in range(5):
            c = HetexClient(ex.url, SigningKey.generate())
            await c.register("buyer", f"buyer {b}", "CN-SH")
            buyers.append(c)
        t0 = time.monotonic()
        n_orders = rounds = 0
        restarted = False
        crashed: list[InProcessAgent] = []
        while time.monotonic() - t0 < seconds - 200:  # the last contracts end before the run does
            for _ in range(rng.randint(3, 8)):
                model = rng.choice(MODELS)
                now = int(time.time())
                spec = {
                    "quantity_devices": rng.choice([1, 2, 4, 8]),
                    "models": [model],
                    "regions": ["CN-SH"],
                    "duration_seconds": rng.choice([60, 120, 180]),
                    "limit_fen_per_device_hour": {model: 3000},
                    "billing_mode": "per_minute",
                    "start_earliest": now,
                    "start_latest": now + 60,
                }
                n_orders += 1
                await rng.choice(buyers).submit_order(spec, f"soak-{n_orders}")
            await op.request("POST", "/v1/rounds")
            rounds += 1
            elapsed = time.monotonic() - t0
            if not crashed and elapsed > seconds * 0.25:
                crashed = rng.sample(agents, 5)
                for a in crashed:
                    await a.crash()
                for n in rng.sample(nodes, 5):
                    n.set_state(count=8, removed=("sim-" + n.pool["model"] + "-7",))
            elif crashed and crashed[0].task is not None and crashed[0].task.done() and elapsed > seconds * 0.3:
                for a in crashed:
                    a.start()
            if not restarted and elapsed > seconds * 0.5:
                ex.kill()
                await asyncio.sleep(outage)
                await ex.start()
                restarted = True
            await asyncio.sleep(5)

        contracts: dict[str, tuple[Node, dict[str, Any]]] = {}
        for n in nodes:
            for c in (await n.client.request("GET", "/v1/contracts", params={"limit": 10_000}))["items"]:
                contracts[c["id"]] = (n, c)
        end = max(c["end_at"] for _, c in contracts.values())
        await wait_for(lambda: time.time() > end + 3, seconds, "contracts end", every=2)
        await wait_for(lambda: all(n.pending() == 0 for n in nodes), 180, "journals drained", every=2)
        await asyncio.sleep(3)
        for a in agents:
            await a.stop()

        batch = await op.request("POST", "/v1/settlements/run", {})
        settled: dict[str, list[dict[str, Any]]] = {}
        for r in batch["records"]:
            settled.setdefault(r["contract_id"], []).append(r)
        reports = device_minutes = 0
        for cid, (n, c) in contracts.items():
            if c["status"] == "pending":
                continue  # confirmed too late by an agent that was down: never started, never billed
            t = n.totals().get(cid, {})
            assert set(t) <= {"sent_reports", "sent_device_minutes"}, t
            usage = (await n.client.request("GET", f"/v1/contracts/{cid}/usage"))["items"]
            assert [u["seq"] for u in usage] == list(range(1, len(usage) + 1)) and len(usage) == t["sent_reports"]
            assert all(u["flags"] == [] for u in usage), usage
            metered = t["sent_device_minutes"]
            recs = settled.get(cid, [])
            assert sum(r["device_minutes"] for r in recs) == metered
            assert sum(r["buyer_debit_fen"] for r in recs) == sum(
                per_minute_fen(c["buyer_price_fen"], r["device_minutes"]) for r in recs
            )
            reports += len(usage)
            device_minutes += metered
        print(
            f"\nsoak: {AGENTS} agents, {seconds} s, {rounds} rounds, {n_orders} orders, {len(contracts)} contracts, "
            f"{reports} usage reports delivered exactly once, {device_minutes} device-minutes settled exactly"
        )
        assert reports > 0 and len(settled) > 0
    finally:
        if ex.proc is not None and ex.proc.poll() is not None:
            print(f"\nhetex serve had exited on its own: {ex.proc.returncode}")
        for a in agents:
            if a.task is not None and not a.task.done():
                a.task.cancel()
        ex.kill()
