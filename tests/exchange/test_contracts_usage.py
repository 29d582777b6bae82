"""Contract lifecycle, usage rules and settlement corrections/permissions through the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exchange.billing import BillingError
from exchange.cli.usage import build_usage_envelope
from exchange.client import RemoteError
from federation.keys import SigningKey
from identifiers.errors import ValidationError
from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import Market, cst, make_market

HOUR = 3600
T0 = cst(2026, 3, 2, 9)


@pytest.fixture
async def market(db: Any, aiohttp_client: Any, tmp_path: Path) -> Market:
    api = await make_api(db, aiohttp_client, tmp_path)
    return await make_market(api, clock_at=T0 - HOUR)


async def confirmed(market: Market, devices: int = 2, hours: int = 4, **kw: Any) -> dict[str, Any]:
    c = await market.contract("per_minute", devices=devices, start=T0, end=T0 + hours * HOUR, **kw)
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    return c


async def refused(coro: Any) -> dict[str, Any]:
    with pytest.raises(RemoteError) as info:
        await coro
    return {"status": info.value.status, **info.value.problem}


async def test_usage_refusals_name_the_rule(market: Market) -> None:
    c = await confirmed(market)
    market.clock.now = T0 + 2 * HOUR
    cid = c["id"]
    before = await refused(market.usage(cid, "m", 1, T0 - 60, T0 + 60, 1))
    assert (before["status"], before["code"], before["reason"]) == (422, "usage_refused", "outside_contract")
    too_many = await refused(market.usage(cid, "m", 1, T0, T0 + HOUR, 121))  # 2 devices x 60 min = 120
    assert too_many["reason"] == "too_many_device_minutes"
    future = await refused(market.usage(cid, "m", 1, T0 + HOUR, T0 + 3 * HOUR, 10))
    assert future["reason"] == "in_future"
    # signed by a key that is not the contract's provider (the node key of someone else)
    stranger = SigningKey.generate()
    env = build_usage_envelope(
        stranger,
        "deadbeef",
        contract_id=cid,
        meter_id="m",
        seq=1,
        period_start=T0,
        period_end=T0 + 60,
        device_minutes=1,
        availability_bps=10_000,
    )
    wrong = await refused(market.provider.request("POST", f"/v1/contracts/{cid}/usage", env))
    assert wrong["reason"] == "wrong_provider"
    other = await confirmed(market)
    mismatch = await refused(_mismatch(market, c, other))
    assert mismatch["reason"] == "contract_mismatch"
    buyer = await refused(market.buyer.request("POST", f"/v1/contracts/{cid}/usage", env))
    assert buyer["status"] == 403
    listed = await market.buyer.request("GET", f"/v1/contracts/{cid}/usage")
    assert listed["items"] == []  # nothing refused was stored


async def _mismatch(market: Market, c: dict[str, Any], other: dict[str, Any]) -> Any:
    env = build_usage_envelope(
        market.provider.key,
        market.provider.keyid,
        contract_id=other["id"],
        meter_id="m",
        seq=1,
        period_start=T0,
        period_end=T0 + 60,
        device_minutes=1,
        availability_bps=10_000,
    )
    return await market.provider.request("POST", f"/v1/contracts/{c['id']}/usage", env)


async def test_unconfirmed_contract_refuses_usage(market: Market) -> None:
    c = await market.contract("per_minute", devices=2, start=T0, end=T0 + HOUR)
    market.clock.now = T0 + HOUR
    problem = await refused(market.usage(c["id"], "m", 1, T0, T0 + 60, 1))
    assert problem["reason"] == "not_confirmed"


async def test_duplicates_conflicts_and_flags(market: Market) -> None:
    c = await confirmed(market, hours=6)
    cid = c["id"]
    market.clock.now = T0 + 6 * HOUR
    a = await market.usage(cid, "m", 1, T0, T0 + HOUR, 100)
    assert a["flags"] == []
    conflict = await refused(market.usage(cid, "m", 1, T0, T0 + HOUR, 99))
    assert (conflict["status"], conflict["code"]) == (409, "usage_conflict")
    gap = await market.usage(cid, "m", 3, T0 + 2 * HOUR, T0 + 3 * HOUR, 10)  # seq 2 and an hour missing
    assert gap["flags"] == ["gap"]
    late = await market.usage(cid, "m", 2, T0 + 30 * 60, T0 + 90 * 60, 10)  # overlaps seq 1, arrives after 3
    assert set(late["flags"]) == {"overlap", "out_of_order"}
    other_meter = await market.usage(cid, "n", 1, T0, T0 + HOUR, 100)  # another meter may cover the same time
    assert other_meter["flags"] == []
    capacity = await refused(market.usage(cid, "n", 2, T0 + HOUR, T0 + 6 * HOUR, 600))  # 220 + 600 > 720
    assert capacity["reason"] == "exceeds_contract_capacity"
    items = (await market.buyer.request("GET", f"/v1/contracts/{cid}/usage"))["items"]
    assert [(u["meter_id"], u["seq"], u["flags"]) for u in items] == [
        ("m", 1, []),
        ("m", 2, ["overlap", "out_of_order"]),
        ("m", 3, ["gap"]),
        ("n", 1, []),
    ]


async def test_confirm_and_read_permissions(market: Market) -> None:
    c = await market.contract("per_minute", devices=2, start=T0, end=T0 + HOUR)
    stranger = await market.api.buyer("Someone else")
    assert (await refused(stranger.request("GET", f"/v1/contracts/{c['id']}")))["status"] == 403
    assert (await stranger.request("GET", "/v1/contracts"))["items"] == []
    assert [x["id"] for x in (await market.provider.request("GET", "/v1/contracts"))["items"]] == [c["id"]]
    assert (await refused(market.buyer.request("POST", f"/v1/contracts/{c['id']}/confirm")))["status"] == 403
    await market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm")
    again = await refused(market.provider.request("POST", f"/v1/contracts/{c['id']}/confirm"))
    assert (again["status"], again["code"]) == (409, "contract_state")
    assert (await refused(market.buyer.request("POST", "/v1/settlements/run", {})))["code"] == "operator_only"
    future = await refused(market.operator.request("POST", "/v1/settlements/run", {"as_of": 2**40}))
    assert future["status"] == 422
    assert (await refused(stranger.request("GET", "/v1/settlements", params={"contract_id": c["id"]})))["status"] == 403


async def test_cancel_before_start_is_free(market: Market) -> None:
    c = await confirmed(market)
    market.clock.now = T0 - 60
    out = await market.buyer.request("POST", f"/v1/contracts/{c['id']}/cancel", {"reason": "plans changed"})
    assert out["status"] == "cancelled" and out["billable_end"] == T0
    market.clock.now = T0 + 10 * HOUR
    assert (await market.settle())["count"] == 0
    problem = await refused(market.usage(c["id"], "m", 1, T0, T0 + 60, 1))
    assert problem["reason"] == "outside_contract"


async def test_cancel_after_start_settles_what_was_used(market: Market) -> None:
    c = await confirmed(market, devices=2, hours=4, buyer_price_fen=3000, fee_bps=100)
    market.clock.now = T0 + HOUR + 30 * 60
    await market.usage(c["id"], "m", 1, T0, T0 + HOUR, 120)
    out = await market.provider.request("POST", f"/v1/contracts/{c['id']}/cancel", {"reason": "hardware fault"})
    assert out["billable_end"] == T0 + HOUR + 30 * 60
    await market.usage(c["id"], "m", 2, T0 + HOUR, T0 + HOUR + 30 * 60, 60)  # still inside the billable span
    after = await refused(market.usage(c["id"], "m", 3, T0 + HOUR + 30 * 60, T0 + 2 * HOUR, 1))
    assert after["reason"] == "outside_contract"
    ended = await refused(market.buyer.request("POST", f"/v1/contracts/{c['id']}/cancel", {"reason": "again"}))
    assert ended["status"] == 409
    [rec] = (await market.settle())["records"]
    # 180 device-minutes x 3000 / 60 = 9000 fen; fee 1 % = 90; provider 8910
    assert (rec["buyer_debit_fen"], rec["provider_credit_fen"], rec["fee_fen"]) == (9000, 8910, 90)
    assert rec["period_end"] == T0 + HOUR + 30 * 60


async def test_late_usage_is_a_superseding_correction(market: Market) -> None:
    c = await confirmed(market, devices=2, hours=2, buyer_price_fen=600, fee_bps=0)
    market.clock.now = T0 + 2 * HOUR
    await market.usage(c["id"], "m", 1, T0, T0 + HOUR, 120)
    [first] = (await market.settle())["records"]
    assert first["buyer_debit_fen"] == 1200 and first["revision"] == 1  # 120 x 600 / 60
    await market.usage(c["id"], "m", 2, T0 + HOUR, T0 + 2 * HOUR, 60)
    [fix] = (await market.settle())["records"]
    # 180 x 600 / 60 = 1800: the full corrected amount, superseding the first record
    assert (fix["buyer_debit_fen"], fix["revision"], fix["supersedes_id"]) == (1800, 2, first["id"])
    assert len(fix["usage_ids"]) == 2 and set(first["usage_ids"]) < set(fix["usage_ids"])
    history = await market.settlements(c["id"])
    assert [(r["revision"], r["buyer_debit_fen"]) for r in history] == [(1, 1200), (2, 1800)]
    assert (await market.settle())["count"] == 0


async def test_create_from_match_validates(market: Market) -> None:
    svc = market.api.svc
    with pytest.raises(ValidationError):
        async with svc.sessions.begin() as session:
            await svc.contracts.create_from_match(
                session,
                order_id=market.order_id,
                pool_id=market.pool_id,
                buyer_id=market.buyer_id,
                provider_id=market.buyer_id,
                devices=1,
                start_at=T0,
                end_at=T0 + HOUR,
                buyer_price_fen=1,
                provider_price_fen=1,
                billing_mode="per_minute",
            )
    with pytest.raises(BillingError):
        await market.contract(
            "project",
            devices=1,
            start=T0,
            end=T0 + HOUR,
            billing_terms={"fixed_price_fen": 100, "milestones": [{"name": "a", "share_bps": 5000}]},
        )


async def test_cli_usage_report(market: Market, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import json

    from exchange.cli.main import main
    from federation.keys import save_signing_key

    c = await confirmed(market)
    market.clock.now = T0 + 2 * HOUR
    key_file = save_signing_key(tmp_path / "node.pem", market.provider.key)
    argv = ["usage", "report", "--url", market.api.base_url, "--key", str(key_file), "--contract", c["id"]]
    argv += ["--meter", "node-7", "--seq", "1", "--from", "2026-03-02T09:00:00+08:00", "--to", str(T0 + HOUR), "--json"]
    assert await asyncio.to_thread(main, [*argv, "--device-minutes", "90"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = (out["meter_id"], out["period_start"], out["device_minutes"], out["status"])
    assert got == ("node-7", "2026-03-02T01:00:00Z", 90, "accepted")  # JSON output: RFC 3339 times
    assert await asyncio.to_thread(main, [*argv, "--device-minutes", "91"]) == 2  # same seq, other body: 409
    assert "already reported" in capsys.readouterr().err


@pytest.mark.parametrize("sql", ["UPDATE settlement_records SET buyer_debit_fen = 1", "DELETE FROM settlement_records"])
async def test_settlement_rows_are_append_only_in_the_database(market: Market, sql: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    c = await confirmed(market, devices=1, hours=1)
    market.clock.now = T0 + HOUR
    assert (await market.settle())["count"] == 1
    with pytest.raises(DBAPIError, match="append-only"):
        async with market.api.svc.sessions.begin() as session:
            await session.execute(text(sql))
    assert len(await market.settlements(c["id"])) == 1


async def test_contracts_listed_by_site_and_end_for_a_node_agent(market: Market) -> None:
    """What a node agent reads each heartbeat: this site's contracts still running (or recently ended)."""
    short = await market.contract("per_minute", devices=1, start=T0, end=T0 + HOUR)
    long = await market.contract("per_minute", devices=1, start=T0, end=T0 + 4 * HOUR)
    sites = (await market.provider.request("GET", "/v1/sites"))["sites"]
    site = next(s for s in sites if market.pool_id in {p["id"] for p in s["pools"]})
    pool_cri = next(p["cri"] for p in site["pools"] if p["id"] == market.pool_id)

    async def ids(**params: Any) -> set[str]:
        return {c["id"] for c in (await market.provider.request("GET", "/v1/contracts", params=params))["items"]}

    assert await ids(site=site["cri"]) == {short["id"], long["id"]}
    assert await ids(site=site["cri"].lower()) == {short["id"], long["id"]}  # any case names the same site
    assert await ids(site=site["cri"], ending_after=T0 + 2 * HOUR) == {long["id"]}
    assert await ids(ending_after=T0 + 4 * HOUR) == set()
    assert await ids(site=site["cri"]) & await ids(status="pending") == {short["id"], long["id"]}
    wrong = await refused(market.provider.request("GET", "/v1/contracts", params={"site": pool_cri}))
    assert (wrong["status"], wrong.get("field")) == (422, "site")
    negative = await refused(market.provider.request("GET", "/v1/contracts", params={"ending_after": -1}))
    assert negative["status"] == 422
