"""Issue 11 bugs 1, 2, 4, 6 and 7, each as it was reported: a 4xx problem+json naming the field, nothing
written (row counts of every table unchanged), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from exchange.api.app import create_app
from exchange.api.metrics import METRICS
from exchange.cli.usage import build_usage_envelope
from federation.dsse import record_payload_type, sign_envelope, sign_json_envelope
from federation.keys import SigningKey
from tests.exchange.registration_support import order_body
from tests.security.kit import HOUR, T0, World, row_counts, send

DEEP = b"[" * 100_000 + b"]" * 100_000
JUNK_SIGNATURE = {
    "Signature-Input": 'sig1=("@method" "@target-uri" "content-digest");created=1;keyid="junk";nonce="n"',
    "Signature": "sig1=:AAAA:",
    "Content-Digest": "sha-256=:AAAA:",
}


async def refused(world: World, method: str, path: str, body: Any, *, signed: bool = True, **kw: Any) -> dict[str, Any]:
    """Send `body` (bytes as is, else JSON), assert a 4xx problem+json and unchanged rows; the problem."""
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    before = await row_counts(world.api)
    client = world.client_for(path) if signed else None
    answer = await send(world.api, method, path, raw, client=client, **kw)
    assert answer.is_problem, (answer.status, answer.content_type, answer.body)
    after = await row_counts(world.api)
    if signed:  # a signed request's nonce is consumed even when refused (replay protection)
        before.pop("seen_nonces"), after.pop("seen_nonces")
    assert after == before
    return dict(answer.body)


# --------------------------------------------------------------------------------------------- bug 1


async def test_deep_json_is_refused_before_the_signature(world: World) -> None:
    for path in ["/v1/participants", "/v1/orders", "/v1/offers", "/v1/audit/exports"]:
        problem = await refused(world, "POST", path, DEEP, signed=False, headers=JUNK_SIGNATURE)
        assert problem["status"] == 400 and problem["code"] == "body_too_deep" and problem["field"] == "body"


async def test_deep_json_in_a_signed_body(world: World) -> None:
    body = json.dumps(order_body(models=[[[["x"]]]] * 1)).encode().replace(b'[[[["x"]]]]', b"[" * 40 + b"]" * 40)
    problem = await refused(world, "POST", "/v1/orders", body, headers={"Idempotency-Key": "deep"})
    assert problem["code"] == "body_too_deep"


# --------------------------------------------------------------------------------------------- bug 2


async def test_export_period_beyond_int64(world: World) -> None:
    for to in [2**63, 2**64 + 5, 2**53]:
        problem = await refused(world, "POST", "/v1/audit/exports", {"from": 0, "to": to})
        assert problem["status"] in (400, 422) and problem["field"] in ("to", "body.to")


async def test_nul_in_a_string_field(world: World) -> None:
    for path, body in [
        ("/v1/audit/exports", {"from": 0, "to": 10, "region": "CN-\u0000"}),
        ("/v1/sites", {"region": "CN-SH", "name": "Node\u00002"}),
        ("/v1/participants", {"role": "buyer", "name": "B\u0000", "public_key": "x" * 44}),
    ]:
        problem = await refused(world, "POST", path, body)
        assert problem["status"] == 400 and problem["code"] == "control_character"


async def test_nul_in_contract_cancel_reason_reaches_neither_database_nor_log(world: World) -> None:
    path = f"/v1/contracts/{world.contract_id}/cancel"
    problem = await refused(world, "POST", path, {"reason": "changed\u0000plans"})
    assert problem["field"] == "reason"


async def test_nul_in_federation_read_filters(world: World) -> None:
    reads = {"status": "holds", "peer": "contracts", "order_id": "contracts", "contract_id": "mirrored"}
    for name in ["status", "peer", "order_id", "contract_id", "kind"]:
        path = f"/v1/federation/{reads.get(name, 'events')}?{name}=a%00b"
        answer = await send(world.api, "GET", path, client=world.market.operator)
        assert answer.is_problem and answer.status == 400 and answer.body["field"] == name


async def test_ledger_entry_index_is_ascii_and_bounded(world: World) -> None:
    for index in ["%C2%B2", "%D9%A1%D9%A2", "9999999999999999999", "99999999999999999999", "+1", "%201"]:
        answer = await send(world.api, "GET", f"/v1/ledger/entries/{index}")
        assert answer.is_problem and answer.body["field"] == "index", answer


async def test_query_ints_are_ascii_and_bounded(world: World) -> None:
    for query in ["limit=%D9%A1%D9%A2", "limit=1_0", "limit=%201", "limit=99999999999999999999999"]:
        answer = await send(world.api, "GET", f"/v1/rounds?{query}")
        assert answer.is_problem and answer.body["field"] == "limit", answer


async def test_download_of_an_unfinished_export_is_409_problem(world: World) -> None:
    reg = world.regulator
    job = await reg.request("POST", "/v1/audit/exports", {"from": 0, "to": 100})
    svc = world.api.svc.audit
    await svc.wait(job["id"])
    await svc._update(job["id"], status="failed")
    answer = await send(world.api, "GET", f"/v1/audit/exports/{job['id']}/bundle", client=reg)
    assert answer.status == 409 and answer.is_problem and answer.body["code"] == "export_not_ready"
    assert answer.body["export_status"] == "failed"


async def test_client_hanging_up_mid_body_is_no_error(world: World, caplog: pytest.LogCaptureFixture) -> None:
    # a server as `hetex serve` runs it (the test server cancels handlers on hang-up, production does not)
    app = create_app(world.api.svc)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caplog.set_level(logging.INFO)
    try:
        for head in (b"Content-Length: 100000", b"Transfer-Encoding: chunked"):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head)
            writer.write(b"\r\n\r\n" + (b'{"quantity' if head.startswith(b"Content") else b'5\r\n{"qua\r\n'))
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            await asyncio.sleep(0.2)
        metrics = generate_latest(app[METRICS].registry).decode()
    finally:
        await runner.shutdown()
        await runner.cleanup()
    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert 'status="500"' not in metrics
    assert 'hetex_http_requests_total{method="POST",route="/v1/orders",status="499"} 2.0' in metrics


# --------------------------------------------------------------------------------------------- bug 2 + 4


def _envelope_with(world: World, signatures: list[tuple[str, SigningKey]]) -> dict[str, Any]:
    payload = {
        "contract_id": world.contract_id,
        "meter_id": "m1",
        "seq": 1,
        "period_start": T0,
        "period_end": T0 + 600,
        "device_minutes": 20,
        "availability_bps": 10_000,
    }
    return sign_json_envelope(record_payload_type("usage"), payload, signatures)


async def test_usage_with_an_unverifiable_signature_is_refused(world: World) -> None:
    for keyid in ["deadbeef", "x" * 17, "k" * 200]:
        world.market.clock.now = T0 + HOUR
        p = world.market.provider
        junk = SigningKey.generate()
        for signatures in ([(keyid, junk), (p.keyid, p.key)], [(p.keyid, p.key), (keyid, junk)]):
            env = _envelope_with(world, signatures)
            problem = await refused(world, "POST", f"/v1/contracts/{world.contract_id}/usage", env)
            assert problem["status"] == 422 and problem["field"].startswith("signatures"), problem
            assert problem.get("reason") == "unverified_signature" or len(keyid) > 64  # longer: refused by the model


async def test_usage_with_a_deeply_nested_signed_payload(world: World) -> None:
    p = world.market.provider
    for depth in (500, 5_000, 100_000):
        payload = b"[" * depth + b"]" * depth
        env = sign_envelope(record_payload_type("usage"), payload, [(p.keyid, p.key)])
        problem = await refused(world, "POST", f"/v1/contracts/{world.contract_id}/usage", env)
        assert problem["status"] == 422, problem


async def test_usage_signer_is_the_verified_key(world: World) -> None:
    world.market.clock.now = T0 + HOUR
    p = world.market.provider
    payload = {"contract_id": world.contract_id, "meter_id": "m1", "seq": 1, "period_start": T0}
    env = build_usage_envelope(
        p.key, p.keyid, **payload, period_end=T0 + 600, device_minutes=20, availability_bps=10_000
    )
    view = await p.request("POST", f"/v1/contracts/{world.contract_id}/usage", env)
    exchange_keyid = world.api.svc.identity.key_id  # the exchange countersigns what it logs
    assert [s["keyid"] for s in view["envelope"]["signatures"]] == [p.keyid, exchange_keyid]
    from exchange.storage.settlement import UsageReport

    async with world.api.svc.sessions() as session:
        row = await session.get(UsageReport, view["id"])
        assert row is not None and row.signer_key_id == p.keyid


# --------------------------------------------------------------------------------------------- bug 6


async def test_unauthenticated_federation_posts_write_nothing(world: World) -> None:
    before = await row_counts(world.api)
    paths = ["summaries", "orders", "mirror", "holds/0190a000-0000-7000-8000-000000000000/commit"]
    for path in paths:
        for headers in ({}, JUNK_SIGNATURE):
            for _ in range(5):
                answer = await send(world.api, "POST", f"/v1/federation/{path}", b'{"protocol":"x"}', headers=headers)
                assert answer.status == 401 and answer.is_problem
    assert await row_counts(world.api) == before
    metrics = (await send(world.api, "GET", "/metrics")).body
    refusals = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("hetex_federation_refusals_total{")
    }
    assert refusals["signature_missing"] == 5 * len(paths)
    assert sum(refusals.values()) == 10 * len(paths)
    assert world.api.svc.federation.gate.refusals.counts == refusals


# --------------------------------------------------------------------------------------------- bug 7


async def test_bad_orders_are_refused(world: World) -> None:
    for override, field in [
        ({"start_latest": 1_000}, "start_latest"),
        ({"start_earliest": 1_000, "start_latest": 2_000}, "start_latest"),
        ({"quantity_devices": None, "quantity_scu": " 12 "}, "quantity_scu"),
        ({"quantity_devices": None, "quantity_scu": "\u0661\u0662"}, "quantity_scu"),
        ({"quantity_devices": None, "quantity_scu": "1e3"}, "quantity_scu"),
        ({"quantity_devices": None, "quantity_scu": "+12"}, "quantity_scu"),
        ({"quantity_devices": "8"}, "quantity_devices"),
        ({"quantity_devices": 8.0}, "quantity_devices"),
        ({"duration_seconds": "0"}, "duration_seconds"),
        ({"all_or_nothing": "true"}, "all_or_nothing"),
        ({"all_or_nothing": 1}, "all_or_nothing"),
    ]:
        body = order_body(**override)
        problem = await refused(world, "POST", "/v1/orders", body, headers={"Idempotency-Key": f"bad-{field}"})
        assert problem["field"] == field, problem


async def test_a_retry_after_the_start_window_closed_returns_the_stored_order(world: World) -> None:
    b, orders = world.market.buyer, world.api.svc.orders
    start_latest = int(time.time()) + 60
    body = order_body(start_latest=start_latest)
    first = await b.submit_order(body, "in-time")
    orders.clock = lambda: start_latest + 1
    assert await b.submit_order(body, "in-time") == first and b.last_status == 200
    problem = await refused(world, "POST", "/v1/orders", body, headers={"Idempotency-Key": "too-late"})
    assert problem["field"] == "start_latest"


async def test_offer_whose_window_already_ended(world: World) -> None:
    now = int(time.time())
    window = {"window_start": now - 7200, "window_end": now - 3600}
    body = {"pool_cri": world.pool_cri, "devices": 1, "ask_fen": 100, **window}
    problem = await refused(world, "POST", "/v1/offers", body)
    assert problem["field"] == "window_end"
    problem = await refused(world, "PATCH", f"/v1/offers/{world.offer_id}", {"window_end": now - 60})
    assert problem["field"] == "window_end"


async def test_participant_name_of_only_spaces(world: World) -> None:
    for name in ["   ", "\u3000\u3000", " \t "]:
        key = SigningKey.generate()
        body = {"role": "buyer", "name": name, "public_key": key.public.to_base64()}
        c = world.api.client(key)
        before = await row_counts(world.api)
        answer = await send(world.api, "POST", "/v1/participants", json.dumps(body).encode(), client=c)
        assert answer.is_problem and answer.body["field"] == "name", answer
        after = await row_counts(world.api)
        before.pop("seen_nonces"), after.pop("seen_nonces")
        assert after == before


async def test_integers_and_decimals_are_strict(world: World) -> None:
    for path, body, field in [
        ("/v1/audit/exports", {"from": "0", "to": 10}, "from"),
        ("/v1/audit/exports", {"from": 0, "to": 5.0}, "to"),
        ("/v1/settlements/run", {"as_of": "0"}, "as_of"),
        ("/v1/sites", {"region": "CN-SH", "name": "N", "pue": 1.25}, "pue"),
        ("/v1/sites", {"region": "CN-SH", "name": "N", "pue": "\u0661.2"}, "pue"),
        ("/v1/offers", {"pool_cri": "x", "devices": "1", "ask_fen": 1, "window_start": 0}, "devices"),
    ]:
        problem = await refused(world, "POST", path, body)
        assert problem["field"] == field, problem
