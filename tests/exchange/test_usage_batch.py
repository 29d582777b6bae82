"""POST /v1/usage/batch: many node-signed reports in one signed request, one result each (billing.md 5.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exchange.cli.usage import build_usage_envelope
from exchange.client import HetexClient, RemoteError, dumps
from federation.keys import SigningKey
from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import Market, cst, make_market

HOUR = 3600
T0 = cst(2026, 3, 2, 9)


@pytest.fixture
async def market(db: Any, aiohttp_client: Any, tmp_path: Path) -> Market:
    api = await make_api(db, aiohttp_client, tmp_path)
    return await make_market(api, clock_at=T0 - HOUR)


async def confirmed(market: Market, hours: int = 4) -> dict[str, Any]:
    c = await market.contract("per_minute", devices=2, start=T0, end=T0 + hours * HOUR)
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    return c


def env(market: Market, cid: str, meter: str, seq: int, start: int, end: int, dm: int, **kw: Any) -> dict[str, Any]:
    key = kw.pop("key", market.provider.key)
    return build_usage_envelope(
        key,
        kw.pop("keyid", market.provider.keyid),
        contract_id=cid,
        meter_id=meter,
        seq=seq,
        period_start=start,
        period_end=end,
        device_minutes=dm,
        availability_bps=10_000,
    )


async def test_batch_checks_each_report_and_commits_the_good_ones(market: Market) -> None:
    a, b = await confirmed(market), await confirmed(market)
    market.clock.now = T0 + 3 * HOUR
    first = await market.usage(a["id"], "m", 1, T0, T0 + HOUR, 60)  # sent alone before
    stranger = SigningKey.generate()
    reports = [
        env(market, a["id"], "m", 1, T0, T0 + HOUR, 60),  # identical to the earlier single report
        env(market, a["id"], "m", 2, T0 + HOUR, T0 + 2 * HOUR, 60),  # same meter, next seq
        env(market, a["id"], "m", 3, T0 + 2 * HOUR, T0 + 3 * HOUR, 60),  # and the one after, same batch
        env(market, b["id"], "n", 1, T0, T0 + HOUR, 30),  # another contract
        env(market, b["id"], "n", 3, T0 + 2 * HOUR, T0 + 3 * HOUR, 10),  # skips seq 2: accepted, flagged
        env(market, a["id"], "m", 2, T0 + HOUR, T0 + 2 * HOUR, 59),  # seq 2 again, other body: conflict
        env(market, b["id"], "x", 1, T0 - 60, T0 + 60, 1),  # outside the contract
        env(market, b["id"], "y", 1, T0, T0 + 60, 1, key=stranger, keyid="deadbeef"),  # not the provider's key
        {"payload": "bm90IGpzb24", "payloadType": "x", "signatures": [{"keyid": "k", "sig": "AA"}]},
        env(market, "0190b2c4-0000-7000-8000-000000000000", "m", 1, T0, T0 + 60, 1),  # no such contract
    ]
    result = await market.provider.report_usage_batch(reports)
    statuses = [r["status"] for r in result["results"]]
    assert statuses == ["duplicate", "accepted", "accepted", "accepted", "accepted"] + ["refused"] * 5
    assert (result["accepted"], result["duplicate"], result["refused"]) == (4, 1, 5)
    assert [r["index"] for r in result["results"]] == list(range(10))
    assert result["results"][0]["id"] == first["id"]
    assert result["results"][4]["flags"] == ["gap"]
    assert [r["error"]["code"] for r in result["results"][5:]] == [
        "usage_conflict",
        "usage_refused",
        "usage_refused",
        "usage_refused",
        "contract_not_found",
    ]
    assert [r["error"].get("reason") for r in result["results"][6:9]] == [
        "outside_contract",
        "wrong_provider",
        "bad_envelope",
    ]
    # what was accepted is stored and logged (consecutive log indices, in the order sent); nothing refused is
    stored_a = (await market.buyer.request("GET", f"/v1/contracts/{a['id']}/usage"))["items"]
    stored_b = (await market.buyer.request("GET", f"/v1/contracts/{b['id']}/usage"))["items"]
    assert [(u["meter_id"], u["seq"]) for u in stored_a] == [("m", 1), ("m", 2), ("m", 3)]
    assert [(u["meter_id"], u["seq"]) for u in stored_b] == [("n", 1), ("n", 3)]
    indices = [r["log_index"] for r in result["results"][1:5]]
    assert indices == list(range(indices[0], indices[0] + 4))


async def test_batch_parties_and_replays(market: Market) -> None:
    c = await confirmed(market)
    market.clock.now = T0 + 2 * HOUR
    report = env(market, c["id"], "m", 1, T0, T0 + HOUR, 60)
    # the buyer may not report the provider's usage: refused per report, nothing stored
    as_buyer = await market.buyer.report_usage_batch([report])
    assert as_buyer["results"][0]["status"] == "refused"
    assert as_buyer["results"][0]["error"]["code"] == "not_contract_party"
    # the same signed request twice: the second is a replay (401), the first stored once
    client: HetexClient = market.provider
    body = dumps({"reports": [report]})
    url = client.url("/v1/usage/batch")
    headers = {"Content-Type": "application/json", **client.sign("POST", url, body)}
    status, _ = await client.send("POST", url, body, headers)
    assert status == 200
    status, raw = await client.send("POST", url, body, headers)
    assert status == 401 and b"nonce_replayed" in raw
    items = (await market.buyer.request("GET", f"/v1/contracts/{c['id']}/usage"))["items"]
    assert len(items) == 1


async def test_batch_refuses_bad_bodies_naming_the_field(market: Market) -> None:
    for body, field in (({"reports": []}, "reports"), ({"reports": [{"payload": "x"}]}, "reports.0.payloadType")):
        with pytest.raises(RemoteError) as info:
            await market.provider.request("POST", "/v1/usage/batch", body)
        assert info.value.status == 422 and info.value.problem["field"] == field
    too_many = [env(market, "c", "m", i, T0, T0 + 60, 1) for i in range(1, 502)]
    with pytest.raises(RemoteError) as info:
        await market.provider.request("POST", "/v1/usage/batch", {"reports": too_many})
    assert info.value.status in (413, 422)


async def test_batch_checks_later_reports_against_earlier_ones_of_the_same_batch(market: Market) -> None:
    """Reports accepted earlier in a batch count as stored for the later ones: a repeat is a duplicate of it, an
    earlier seq after a later one is out of order, and the contract's capacity includes them."""
    a = await confirmed(market)  # 2 devices x 4 h = 480 device-minutes
    market.clock.now = T0 + 4 * HOUR
    reports = [
        env(market, a["id"], "q", 2, T0 + HOUR, T0 + 2 * HOUR, 120),  # seq 1 not seen yet: gap
        env(market, a["id"], "q", 1, T0, T0 + HOUR, 120),  # arrives after seq 2: out of order
        env(market, a["id"], "q", 2, T0 + HOUR, T0 + 2 * HOUR, 120),  # identical to the first: duplicate
        env(market, a["id"], "r", 1, T0, T0 + 2 * HOUR, 240),  # 480 reported with this one: still fits
        env(market, a["id"], "r", 2, T0 + 2 * HOUR, T0 + 3 * HOUR, 1),  # one minute more than the contract has
    ]
    result = await market.provider.report_usage_batch(reports)
    items = result["results"]
    assert [r["status"] for r in items] == ["accepted", "accepted", "duplicate", "accepted", "refused"]
    assert items[0]["flags"] == ["gap"] and items[1]["flags"] == ["out_of_order"]
    assert items[2]["id"] == items[0]["id"] and items[2]["log_index"] == items[0]["log_index"]
    assert items[4]["error"]["reason"] == "exceeds_contract_capacity"
    stored = (await market.buyer.request("GET", f"/v1/contracts/{a['id']}/usage"))["items"]
    assert sorted((u["meter_id"], u["seq"]) for u in stored) == [("q", 1), ("q", 2), ("r", 1)]
