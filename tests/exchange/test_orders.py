"""Buyer orders through the HTTP API: validation, idempotency (also under concurrency), listing with
filters and cursors, cancellation, and feasibility flags."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.client import HetexClient, RemoteConflictError, RemoteError, RemoteValidationError
from exchange.composition import build_services
from exchange.services.orders import decode_cursor, encode_cursor
from exchange.settings import Settings
from exchange.storage.orders import Order
from federation.keys import SigningKey
from tests.exchange.appfactory import serve
from tests.exchange.registration_support import Api, api, capacity, order_body

__all__ = ["api"]


async def test_submit_read_list_cancel(api: Api) -> None:
    await capacity(api)
    b = await api.buyer()
    order = await b.submit_order(order_body(), "key-1")
    assert b.last_status == 201 and order["status"] == "open" and order["flags"] == []
    assert order["spec"]["colocation"] == "any" and order["spec"]["all_or_nothing"] is True
    assert await b.request("GET", f"/v1/orders/{order['id']}") == order
    again = await b.submit_order(order_body(), "key-1")
    assert b.last_status == 200 and again == order
    with pytest.raises(RemoteConflictError) as err:
        await b.submit_order(order_body(quantity_devices=4), "key-1")
    assert err.value.remote_code == "idempotency_key_reused" and err.value.problem["order_id"] == order["id"]
    cancelled = await b.cancel_order(order["id"])
    assert cancelled["status"] == "cancelled"
    assert (await b.cancel_order(order["id"]))["status"] == "cancelled"
    # another buyer may reuse the same key for its own order
    b2 = await api.buyer("B2")
    other = await b2.submit_order(order_body(), "key-1")
    assert other["id"] != order["id"]


async def test_missing_idempotency_key(api: Api) -> None:
    b = await api.buyer()
    with pytest.raises(RemoteValidationError) as err:
        await b.request("POST", "/v1/orders", order_body())
    assert err.value.remote_code == "idempotency_key_required" and err.value.field == "Idempotency-Key"
    assert (await api.counts())["orders"] == 0


async def test_list_filters_and_cursor_pagination(api: Api) -> None:
    b = await api.buyer()
    ids = []
    for i in range(7):
        mode = "subscription" if i % 2 else "per_minute"
        terms = {"period": "monthly"} if mode == "subscription" else None
        ids.append((await b.submit_order(order_body(billing_mode=mode, billing_terms=terms), f"k{i}"))["id"])
    await b.cancel_order(ids[0])
    seen: list[str] = []
    cursor = None
    while True:
        page = await b.list_orders(limit=3, cursor=cursor)
        seen += [o["id"] for o in page["orders"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)  # UUIDv7: newest first
    subs = await b.list_orders(billing_mode="subscription")
    assert {o["id"] for o in subs["orders"]} == {ids[i] for i in (1, 3, 5)}
    assert [o["id"] for o in (await b.list_orders(status="cancelled"))["orders"]] == [ids[0]]
    created = (await b.request("GET", f"/v1/orders/{ids[0]}"))["created_at"]
    assert len((await b.list_orders(created_after=created + 10))["orders"]) == 0
    assert len((await b.list_orders(created_before=created))["orders"]) == 0
    b2 = await api.buyer("B2")
    assert (await b2.list_orders())["orders"] == []
    for bad in ({"cursor": "zzz"}, {"limit": 0}, {"status": "weird"}, {"created_after": "yesterday"}):
        with pytest.raises(RemoteValidationError) as err:
            await b.list_orders(**bad)
        assert err.value.field == next(iter(bad))


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(1700000000, "abc")) == (1700000000, "abc")


BAD_ORDERS: list[tuple[dict[str, Any], str]] = [
    ({"quantity_scu": "16"}, "body"),  # both quantities
    ({"quantity_devices": None}, "body"),  # neither
    ({"quantity_devices": None, "quantity_scu": 16}, "quantity_scu"),  # SCU must be a decimal string
    ({"quantity_devices": 0}, "quantity_devices"),
    ({"models": None}, "body"),
    ({"models": ["NV-H999"]}, "models.0"),
    ({"regions": ["CN-XX"]}, "regions.0"),
    ({"limit_fen_per_scu_hour": 100}, "body"),
    ({"limit_fen_per_device_hour": {"NV-H100-SXM": -1}}, "limit_fen_per_device_hour.NV-H100-SXM"),
    ({"limit_fen_per_device_hour": {"NV-H999": 5}}, "limit_fen_per_device_hour.NV-H999"),
    ({"min_fill_devices": 2}, "body"),
    ({"all_or_nothing": False, "min_fill_devices": 20}, "body"),
    ({"colocation": "rack"}, "colocation"),
    ({"duration_seconds": None}, "duration_seconds"),
    ({"start_earliest": 100, "start_latest": 50}, "body"),
    ({"billing_mode": "subscription"}, "body"),
    (
        {
            "billing_mode": "project",
            "billing_terms": {"fixed_price_fen": 10, "milestones": [{"name": "a", "share_bps": 10}]},
        },
        "body",
    ),
    ({"billing_terms": {"period": "monthly"}}, "body"),
    ({"constraints": {"families": ["Nope"]}}, "constraints.families.0"),
    ({"constraints": {"min_memory_gb": "lots"}}, "constraints.min_memory_gb"),
    ({"home_region": None, "max_latency_ms": 10}, "home_region"),
    ({"surprise": True}, "surprise"),
]


@pytest.mark.parametrize(("change", "field"), BAD_ORDERS)
async def test_bad_orders_name_the_field(api: Api, change: dict[str, Any], field: str) -> None:
    b = api.client()
    await b.register("buyer", "no home")  # no home region
    with pytest.raises(RemoteValidationError) as err:
        await b.submit_order(order_body(**change), "k")
    assert err.value.status == 422 and err.value.field == field, err.value.problem
    assert (await api.counts())["orders"] == 0


async def test_billing_modes_with_terms_are_accepted(api: Api) -> None:
    b = await api.buyer()
    project = order_body(
        billing_mode="project",
        billing_terms={
            "fixed_price_fen": 5_000_000,
            "milestones": [{"name": "pretrain", "share_bps": 6000}, {"name": "eval", "share_bps": 4000}],
        },
    )
    tier = order_body(billing_mode="compute_tier", billing_terms={"tier_table": "standard"})
    scu = order_body(
        quantity_devices=None,
        quantity_scu="12.5",
        limit_fen_per_device_hour=None,
        limit_fen_per_scu_hour=900,
        models=None,
        constraints={"families": ["Hopper"]},
    )
    for i, body in enumerate((project, tier, scu)):
        view = await b.submit_order(body, f"t{i}")
        assert view["billing_mode"] == body.get("billing_mode", "per_minute")
    assert view["spec"]["quantity_scu"] == "12.5"


async def test_feasibility_flags(api: Api) -> None:
    await capacity(api, region="CN-SH", model="NV-H100-SXM", devices=16, ask_fen=2000)
    b = await api.buyer(home_region="CN-SH")

    async def flags(key: str, **change: Any) -> list[str]:
        return [f["code"] for f in (await b.submit_order(order_body(**change), key))["flags"]]

    assert await flags("ok") == []
    assert await flags("model", models=["HW-910B3"], limit_fen_per_device_hour={"*": 3000}) == [
        "no_pool_of_acceptable_model"
    ]
    assert await flags("region", regions=["CN-BJ"]) == ["no_pool_in_regions"]
    assert await flags("price", limit_fen_per_device_hour={"NV-H100-SXM": 1000}) == ["limit_below_asks"]
    assert await flags("gang", quantity_devices=32) == ["insufficient_capacity"]
    assert await flags(
        "mem",
        models=None,
        constraints={"families": ["Hopper"], "min_memory_gb": 200},
        limit_fen_per_device_hour={"*": 3000},
    ) in (["memory_too_small"], ["no_acceptable_model"])
    assert await flags("partial", quantity_devices=32, all_or_nothing=False, min_fill_devices=8) == []
    assert await flags("pools", quantity_devices=16, max_pools=1) == []


async def _concurrent_submissions(url: str, tmp_path: Path, aiohttp_client: Any) -> None:
    svc = await build_services(Settings(database_url=url, key_dir=tmp_path / "keys"))
    await svc.identity.init(exist_ok=True)
    try:
        http = await serve(aiohttp_client, svc)
        base = str(http.make_url("")).rstrip("/")
        buyer = HetexClient(base, SigningKey.generate(), session=http.session)
        await buyer.register("buyer", "burst", "CN-SH")
        keys = [f"k{i}" for i in range(150)] + [f"k{i}" for i in range(50)]
        random.Random(7).shuffle(keys)

        async def one(key: str) -> dict[str, Any]:
            for _attempt in range(5):
                try:
                    return await buyer.submit_order(order_body(), key)
                except RemoteError as exc:  # pragma: no cover - surfaced below if it persists
                    if exc.status < 500:
                        raise
            raise AssertionError("server kept failing")

        results = await asyncio.gather(*(one(k) for k in keys))
        by_key: dict[str, set[str]] = {}
        for key, res in zip(keys, results, strict=True):
            by_key.setdefault(key, set()).add(res["id"])
        assert all(len(ids) == 1 for ids in by_key.values())
        assert len({res["id"] for res in results}) == 150
        assert Counter(len([k for k in keys if k == key]) for key in by_key) == Counter({1: 100, 2: 50})
        async with svc.sessions() as session:
            assert (await session.execute(select(func.count()).select_from(Order))).scalar_one() == 150
    finally:
        await svc.close()


async def test_concurrent_duplicate_submissions(
    fresh_db_factory: Callable[[], str], tmp_path: Path, aiohttp_client: Any
) -> None:
    """200 concurrent submissions, 50 of them retries of another's key -> exactly 150 orders."""
    await _concurrent_submissions(fresh_db_factory(), tmp_path, aiohttp_client)
