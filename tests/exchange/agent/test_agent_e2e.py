"""End to end with a real `hetex serve` and `hetex agent run` processes on simulated devices: rounds,
contracts the agents confirm and meter, signed usage through crashes, a network outage and an exchange
restart, then settlement. Every report arrives exactly once (the exchange's per-meter sequence check flags
nothing), and the settled device-minutes and fen equal what the agents metered exactly."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.billing.per_minute import per_minute_fen
from exchange.client import HetexClient
from federation.keys import SigningKey
from tests.exchange.agent.agentkit import ExchangeProc, Node, provider_node, wait_for

pytestmark = pytest.mark.slow
DURATION = 60  # long enough that the faults below land inside the contracts even on a loaded machine
DEVICES = 16


async def order(buyer: HetexClient, n: int, devices: int) -> dict[str, Any]:
    now = int(time.time())
    spec = {
        "quantity_devices": devices,
        "models": ["NV-H100-SXM"],
        "regions": ["CN-SH"],
        "duration_seconds": DURATION,
        "limit_fen_per_device_hour": {"NV-H100-SXM": 3000},
        "all_or_nothing": True,
        "same_model": True,
        "colocation": "site",
        "max_pools": 1,
        "billing_mode": "per_minute",
        "start_earliest": now,
        "start_latest": now + 300,
    }
    return await buyer.submit_order(spec, f"agent-e2e-{n}")


async def offers_of(node: Node) -> int:
    listed = await node.client.request("GET", "/v1/offers", params={"status": "open"})
    return sum(o["devices"] for o in listed["offers"])


async def test_agents_meter_and_settle_exactly_through_faults(tmp_path: Path) -> None:
    ex = ExchangeProc(tmp_path)
    await ex.start()
    nodes: list[Node] = []
    try:
        op = await ex.add_operator()
        nodes = [await provider_node(ex, tmp_path, f"node{i}", devices=DEVICES) for i in range(3)]
        nodes[0].start(crash_after_send=True)  # dies after its first accepted report, before journaling it
        for n in nodes[1:]:
            n.start()
        await wait_for(lambda: all("agent_started" in n.log_text() for n in nodes), 120, "agents start", every=0.5)

        # a device removed from node2 leaves the market before the round
        nodes[2].set_state(count=DEVICES, removed=("sim-NV-H100-SXM-3",))
        await wait_for(lambda: _equals(offers_of(nodes[2]), DEVICES - 1), 120, "node2 offer reduced by one device")

        buyer = HetexClient(ex.url, SigningKey.generate())
        await buyer.register("buyer", "buyer", "CN-SH")
        for i in range(3):
            await order(buyer, i, DEVICES)
        rnd = await op.request("POST", "/v1/rounds")
        assert rnd["status"] == "completed", rnd
        contracts: list[dict[str, Any]] = []
        pools = {n.pool["id"]: n for n in nodes}
        mine: dict[str, list[dict[str, Any]]] = {n.name: [] for n in nodes}
        for n in nodes:
            for c in (await n.client.request("GET", "/v1/contracts"))["items"]:
                mine[n.name].append(c)
                contracts.append(c)
        assert {c["pool_id"] for c in contracts} == {nodes[0].pool["id"], nodes[1].pool["id"]}, (
            "node2 lost a device: a whole-pool gang cannot land there"
        )
        assert all(pools[c["pool_id"]].name != "node2" for c in contracts)
        await wait_for(lambda: _all_confirmed(nodes[:2]), 120, "agents confirm their contracts")

        # faults while metering: node0 dies between the exchange accepting a report and journaling that
        # (restarted, it resends: answered as a duplicate); the exchange is killed mid-stream and unreachable;
        # node1 is killed (kill -9) with unsent reports in its journal, restarted; the exchange comes back
        node0 = nodes[0].proc
        assert node0 is not None
        assert await asyncio.to_thread(node0.wait, 180) == 9
        nodes[0].start()
        ex.kill()
        await wait_for(lambda: nodes[1].pending() > 0, 120, "node1 journals a report it cannot send")
        nodes[1].kill9()
        await asyncio.sleep(1)
        nodes[1].start()
        await asyncio.sleep(2)
        await ex.start()

        end = max(c["end_at"] for c in contracts)
        await wait_for(lambda: time.time() > end + 2, DURATION + 180, "contracts end")
        await wait_for(lambda: all(_final(n, mine[n.name]) for n in nodes[:2]), 240, "all usage delivered")
        for n in nodes:
            assert n.stop() == 0, n.log_text()[-2000:]

        batch = await op.request("POST", "/v1/settlements/run", {})
        by_contract: dict[str, list[dict[str, Any]]] = {}
        for r in batch["records"]:
            by_contract.setdefault(r["contract_id"], []).append(r)
        for n in nodes[:2]:
            totals = n.totals()
            for c in mine[n.name]:
                t = totals[c["id"]]
                assert set(t) == {"sent_reports", "sent_device_minutes"}, t  # nothing pending, nothing refused
                usage = (await n.client.request("GET", f"/v1/contracts/{c['id']}/usage"))["items"]
                # exactly once: seq 1..n, contiguous periods, no flags (gap/overlap/out_of_order)
                assert [u["seq"] for u in usage] == list(range(1, t["sent_reports"] + 1))
                assert all(u["flags"] == [] and u["status"] == "accepted" for u in usage), usage
                assert all(a["period_end"] == b["period_start"] for a, b in itertools.pairwise(usage))
                assert usage[-1]["period_end"] == c["end_at"]
                metered = t["sent_device_minutes"]
                assert sum(u["device_minutes"] for u in usage) == metered
                recs = by_contract[c["id"]]
                assert sum(r["device_minutes"] for r in recs) == metered
                assert sum(r["buyer_debit_fen"] for r in recs) == sum(
                    per_minute_fen(c["buyer_price_fen"], r["device_minutes"]) for r in recs
                )
                # the node was down ~6 s at most per fault: it bills no more than it could observe
                assert 0 < metered <= c["devices"] * DURATION // 60
        assert (await op.request("POST", "/v1/settlements/run", {}))["count"] == 0
        answers = [json.loads(a) for (a,) in _rows(nodes[0], "SELECT answer FROM reports")]
        assert [a["status"] for a in answers].count("duplicate") == 1, answers  # the resend after the crash
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
        ex.kill()


async def _equals(value: Any, expected: int) -> bool:
    return (await value) == expected


async def _all_confirmed(nodes: list[Node]) -> bool:
    for n in nodes:
        items = (await n.client.request("GET", "/v1/contracts"))["items"]
        if not items or any(c["status"] != "confirmed" for c in items):
            return False
    return True


def _rows(node: Node, sql: str) -> list[tuple[Any, ...]]:
    from exchange.agent.journal import Journal

    j = Journal(node.journal)
    try:
        return j.db.execute(sql).fetchall()
    finally:
        j.close()


def _final(node: Node, contracts: list[dict[str, Any]]) -> bool:
    """Every contract's last period (ending at the contract end) is journaled and nothing is pending."""
    if node.pending():
        return False
    from exchange.agent.journal import Journal

    j = Journal(node.journal)
    try:
        ends = dict(j.db.execute("SELECT contract_id, max(period_end) FROM reports GROUP BY contract_id").fetchall())
    finally:
        j.close()
    return all(ends.get(c["id"]) == c["end_at"] for c in contracts)
