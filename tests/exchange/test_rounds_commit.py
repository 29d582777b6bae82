"""The commit step of a clearing round when providers amend their offers while the round solves
(SQLite and PostgreSQL): amendments that keep the capacity (ask changes, longer windows) keep every
allocation; amendments that take capacity away win, and the round record names each dropped allocation
with its reason; no pool or offer is ever oversold."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from exchange.client import HetexClient
from exchange.storage.ledger import LogEntry
from federation.dsse import verify_envelope
from matching.model import ClearingResult, Market
from tests.exchange.registration_support import Api, Capacity, capacity, make_api, order_body
from tests.exchange.test_rounds_api import assert_capacity_respected, contracts_of, operator

_idem = itertools.count()


@pytest.fixture
async def api(db: Any, aiohttp_client: Any, tmp_path: Path) -> Api:
    """The app on the per-test rolled-back database."""
    return await make_api(db, aiohttp_client, tmp_path)


def during_solve(api: Api, act: Callable[[], Awaitable[Any]]) -> None:
    """Run `act` after the round's snapshot and solve, before its commit (as a concurrent request would)."""
    solve = api.svc.rounds._solve

    async def solve_then_act(market: Market) -> tuple[str, ClearingResult]:
        solved = await solve(market)
        await act()
        return solved

    api.svc.rounds._solve = solve_then_act  # type: ignore[method-assign]


def after_prepare(api: Api, act: Callable[[], Awaitable[Any]]) -> None:
    """Run `act` after the round prepared its commit (contracts built, records signed, outside the write
    transaction), before the write transaction takes its locks."""
    prepare = api.svc.rounds._prepare

    async def prepare_then_act(*args: Any) -> Any:
        plan = await prepare(*args)
        await act()
        return plan

    api.svc.rounds._prepare = prepare_then_act  # type: ignore[method-assign]


HOOKS = {"during_solve": during_solve, "after_prepare": after_prepare}


async def market_of_two_orders(api: Api) -> tuple[Capacity, HetexClient]:
    """One 16-device offer and two 4-device orders that both fit it."""
    cap = await capacity(api, devices=16, ask_fen=1000)
    buyer = await api.buyer()
    for _ in range(2):
        await buyer.submit_order(order_body(quantity_devices=4, duration_seconds=3600), f"k-{next(_idem)}")
    return cap, buyer


async def amend(cap: Capacity, **body: Any) -> None:
    await cap.provider.request("PATCH", f"/v1/offers/{cap.offer['id']}", body)


@pytest.mark.parametrize(
    "change",
    [
        {"ask_fen": 1500},
        {"ask_fen": 500},
        {"window_end": int(time.time()) + 30 * 86_400},
        {"billing_modes": ["per_minute"]},
        {"devices": 8},  # fewer devices, still room for both orders
    ],
)
async def test_amendments_that_keep_capacity_keep_every_allocation(api: Api, change: dict[str, Any]) -> None:
    cap, _buyer = await market_of_two_orders(api)
    during_solve(api, lambda: amend(cap, **change))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert (rnd["status"], rnd["contracts"], rnd["dropped_allocations"], rnd["dropped"]) == ("completed", 2, 0, [])
    assert rnd["matched_devices"] == 8
    await assert_capacity_respected(api)


@pytest.mark.parametrize(
    ("change", "reason", "kept"),
    [
        ({"devices": 6}, "capacity", 1),  # room for one of the two 4-device orders
        ({"devices": 3}, "capacity", 0),
        ({"window_end": int(time.time()) + 1800}, "outside_offer_window", 0),
        ({"window_start": int(time.time()) + 86_400}, "outside_offer_window", 0),
        ({"min_lease_seconds": 86_400}, "below_min_lease", 0),
        ({"billing_modes": ["subscription"]}, "billing_mode_withdrawn", 0),
    ],
)
@pytest.mark.parametrize("hook", sorted(HOOKS))
async def test_amendments_that_reduce_capacity_win_and_are_named(
    api: Api, change: dict[str, Any], reason: str, kept: int, hook: str
) -> None:
    """Also when the amendment lands after the commit was prepared: the write transaction checks again."""
    cap, _buyer = await market_of_two_orders(api)
    HOOKS[hook](api, lambda: amend(cap, **change))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["status"] == "completed" and rnd["contracts"] == kept
    assert rnd["dropped_allocations"] == 2 - kept == len(rnd["dropped"])
    for d in rnd["dropped"]:
        assert d["reason"] == reason and d["offer_id"] == cap.offer["id"] and d["devices"] == 4
        assert d["end_at"] - d["start_at"] == 3600
    assert len(await contracts_of(api)) == kept
    await assert_capacity_respected(api)


async def test_a_withdrawn_offer_drops_its_allocations(api: Api) -> None:
    cap, _buyer = await market_of_two_orders(api)
    during_solve(api, lambda: cap.provider.request("DELETE", f"/v1/offers/{cap.offer['id']}"))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["contracts"] == 0 and [d["reason"] for d in rnd["dropped"]] == ["offer_closed"] * 2
    assert await contracts_of(api) == []


@pytest.mark.parametrize("hook", sorted(HOOKS))
async def test_a_cancelled_order_is_dropped_and_the_other_kept(api: Api, hook: str) -> None:
    cap, buyer = await market_of_two_orders(api)
    first = (await buyer.list_orders())["orders"][-1]["id"]
    HOOKS[hook](api, lambda: buyer.cancel_order(first))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["contracts"] == 1 and [(d["order_id"], d["reason"]) for d in rnd["dropped"]] == [
        (first, "order_changed")
    ]
    assert [c.order_id for c in await contracts_of(api)] != [first]
    await assert_capacity_respected(api)
    got = await (await operator(api)).request("GET", f"/v1/rounds/{rnd['id']}")
    assert got["dropped"] == rnd["dropped"]  # the operator sees which allocations were dropped and why
    public = await buyer.request("GET", f"/v1/rounds/{rnd['id']}", signed=False)
    assert "dropped" not in public and public["dropped_allocations"] == 1  # others see only the count
    assert cap.offer["id"] == rnd["dropped"][0]["offer_id"]


async def test_a_key_rotation_after_prepare_signs_the_contracts_with_the_new_key(api: Api) -> None:
    """Records signed ahead of the write transaction are signed again if the exchange key rotated meanwhile:
    the log never holds a record signed by a key that was no longer current when it was appended."""
    await market_of_two_orders(api)
    old_id, _ = await api.svc.identity.signer_for()
    after_prepare(api, lambda: api.svc.identity.rotate(api.svc.ledger, overlap_seconds=0))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    new_id, _ = await api.svc.identity.signer_for()
    assert rnd["contracts"] == 2 and new_id != old_id
    made = await contracts_of(api)
    async with api.svc.sessions() as session:
        payloads = (
            await session.scalars(select(LogEntry.payload).where(LogEntry.idx.in_([c.log_index for c in made])))
        ).all()
    assert len(payloads) == 2
    ring = await api.svc.identity.keyring()
    for payload in payloads:
        envelope = json.loads(payload)
        assert [s["keyid"] for s in envelope["signatures"]] == [new_id]
        body = json.loads(verify_envelope(envelope, ring, payload_type="application/vnd.hetex.contract+json"))
        assert body["contract_id"] in {c.id for c in made}
