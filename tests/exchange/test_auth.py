"""Request authentication through the real HTTP stack: every refusal is 401/403 with a named reason and
changes nothing in the database (row counts), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from sqlalchemy import select

from exchange.client import HetexClient, dumps
from exchange.services.participants import participant_key_id
from exchange.storage.registration import Site
from federation.httpsig import sign_request
from federation.keys import SigningKey
from identifiers.cri import mint_site_cri
from tests.exchange.registration_support import Api, api, capacity, order_body

__all__ = ["api"]


async def send(api: Api, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A raw request; (status, JSON body)."""
    async with api.http.session.request(method, api.base_url + path, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def signed(c: HetexClient, method: str, path: str, body: bytes, **kw: Any) -> dict[str, str]:
    """Headers of a request signed by `c` (with overrides passed to sign_request)."""
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(method, c.base_url + path, {}, body, c.key, c.keyid, **kw))
    return headers


SITE = dumps({"region": "CN-SH", "name": "node"})


async def assert_refused(
    api: Api, method: str, path: str, body: bytes, headers: dict[str, str], status: int, reason: str
) -> dict[str, Any]:
    before = await api.counts()
    got, problem = await send(api, method, path, body, headers)
    assert (got, problem.get("reason")) == (status, reason), problem
    assert problem["status"] == status and problem["type"].startswith("https://")
    after = await api.counts()
    if status == 401:
        assert after == before
    else:  # a validly signed request is remembered (its nonce), but nothing else changes
        assert {k: v for k, v in after.items() if k != "seen_nonces"} == {
            k: v for k, v in before.items() if k != "seen_nonces"
        }
    return problem


async def test_unsigned_write_is_refused(api: Api) -> None:
    await api.provider()
    problem = await assert_refused(
        api, "POST", "/v1/sites", SITE, {"Content-Type": "application/json"}, 401, "signature_missing"
    )
    assert problem["code"] == "signature_refused"


async def test_bad_signature_is_refused(api: Api) -> None:
    p = await api.provider()
    headers = signed(p, "POST", "/v1/sites", SITE)
    label, _, value = headers["Signature"].partition("=:")
    raw = bytearray(base64.b64decode(value.rstrip(":")))
    raw[0] ^= 1
    headers["Signature"] = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "signature_invalid")


async def test_signature_by_another_key_is_refused(api: Api) -> None:
    p = await api.provider()
    other = SigningKey.generate()
    headers = signed(p, "POST", "/v1/sites", SITE)
    forged = sign_request("POST", p.base_url + "/v1/sites", {}, SITE, other, p.keyid)
    headers["Signature"] = forged["Signature"]
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "signature_invalid")


async def test_tampered_body_is_refused(api: Api) -> None:
    p = await api.provider()
    headers = signed(p, "POST", "/v1/sites", SITE)
    tampered = dumps({"region": "CN-BJ", "name": "node"})
    await assert_refused(api, "POST", "/v1/sites", tampered, headers, 401, "digest_mismatch")


async def test_signature_for_another_target_is_refused(api: Api) -> None:
    p = await api.provider()
    cap = await capacity(api, provider=p)
    headers = signed(p, "POST", "/v1/sites", b"")
    path = f"/v1/sites/{cap.site['cri']}/heartbeat"
    await assert_refused(api, "POST", path, b"", headers, 401, "signature_invalid")


async def test_expired_signature_is_refused(api: Api) -> None:
    p = await api.provider()
    headers = signed(p, "POST", "/v1/sites", SITE, created=int(time.time()) - 301)
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "signature_expired")
    headers = signed(p, "POST", "/v1/sites", SITE, created=int(time.time()) + 400)
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "signature_expired")


async def test_replayed_nonce_is_refused(api: Api) -> None:
    b = await api.buyer()
    body = dumps(order_body())
    headers = signed(b, "POST", "/v1/orders", body)
    headers["Idempotency-Key"] = "k1"
    status, first = await send(api, "POST", "/v1/orders", body, headers)
    assert status == 201, first
    await assert_refused(api, "POST", "/v1/orders", body, headers, 401, "nonce_replayed")
    # a fresh signature over the same request is a legitimate retry, answered with the original order
    retry = await b.submit_order(order_body(), "k1")
    assert retry["id"] == first["id"] and b.last_status == 200


async def test_unknown_key_is_refused(api: Api) -> None:
    stranger = api.client()
    headers = signed(stranger, "POST", "/v1/sites", SITE)
    problem = await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "unknown_key")
    assert problem["keyid"] == stranger.keyid


async def test_missing_nonce_and_garbage_headers_are_refused(api: Api) -> None:
    p = await api.provider()
    headers = signed(p, "POST", "/v1/sites", SITE)
    headers["Signature-Input"] = headers["Signature-Input"].replace(";nonce=", ";x-nonce=")
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "nonce_missing")
    headers = signed(p, "POST", "/v1/sites", SITE)
    headers["Signature-Input"] = "((("
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "signature_malformed")
    headers = signed(p, "POST", "/v1/sites", SITE)
    del headers["Content-Digest"]
    await assert_refused(api, "POST", "/v1/sites", SITE, headers, 401, "digest_missing")


async def test_wrong_owner_is_forbidden(api: Api) -> None:
    cap = await capacity(api)
    intruder = await api.provider("Provider Z")
    site, pool, offer = cap.site["cri"], cap.pool["cri"], cap.offer["id"]
    cases = [
        ("POST", f"/v1/sites/{site}/heartbeat", b""),
        ("DELETE", f"/v1/sites/{site}", b""),
        ("POST", f"/v1/sites/{site}/pools", dumps({"model": "NV-H100-SXM", "devices": 8})),
        ("DELETE", f"/v1/pools/{pool}", b""),
        ("POST", "/v1/offers", dumps({"pool_cri": pool, "devices": 1, "ask_fen": 5, "window_start": 0})),
        ("PATCH", f"/v1/offers/{offer}", dumps({"ask_fen": 1})),
        ("DELETE", f"/v1/offers/{offer}", b""),
    ]
    for method, path, body in cases:
        await assert_refused(api, method, path, body, signed(intruder, method, path, body), 403, "not_owner")
    b1 = await api.buyer()
    order = await b1.submit_order(order_body(), "o1")
    b2 = await api.buyer("Buyer 2")
    path = f"/v1/orders/{order['id']}/cancel"
    await assert_refused(api, "POST", path, b"", signed(b2, "POST", path, b""), 403, "not_owner")
    got, problem = await send(
        api, "GET", f"/v1/orders/{order['id']}", b"", signed(b2, "GET", f"/v1/orders/{order['id']}", b"")
    )
    assert (got, problem["reason"]) == (403, "not_owner")


async def test_regulator_cannot_write(api: Api) -> None:
    cap = await capacity(api)
    reg = await api.regulator()
    b = await api.buyer()
    order = await b.submit_order(order_body(), "o1")
    cases = [
        ("POST", "/v1/sites", SITE),
        ("POST", f"/v1/sites/{cap.site['cri']}/heartbeat", b""),
        ("DELETE", f"/v1/sites/{cap.site['cri']}", b""),
        ("POST", "/v1/offers", dumps({"pool_cri": cap.pool["cri"], "devices": 1, "ask_fen": 5, "window_start": 0})),
        ("DELETE", f"/v1/offers/{cap.offer['id']}", b""),
        ("POST", "/v1/orders", dumps(order_body())),
        ("POST", f"/v1/orders/{order['id']}/cancel", b""),
    ]
    for method, path, body in cases:
        headers = signed(reg, method, path, body)
        headers["Idempotency-Key"] = "r1"
        await assert_refused(api, method, path, body, headers, 403, "role_forbidden")
    # a regulator may read
    seen = await reg.request("GET", f"/v1/orders/{order['id']}")
    assert seen["id"] == order["id"]


async def test_buyer_cannot_register_capacity_and_provider_cannot_order(api: Api) -> None:
    b = await api.buyer()
    await assert_refused(api, "POST", "/v1/sites", SITE, signed(b, "POST", "/v1/sites", SITE), 403, "role_forbidden")
    p = await api.provider()
    body = dumps(order_body())
    headers = signed(p, "POST", "/v1/orders", body)
    headers["Idempotency-Key"] = "x"
    await assert_refused(api, "POST", "/v1/orders", body, headers, 403, "role_forbidden")


async def test_registration_must_be_signed_by_the_registered_key(api: Api) -> None:
    holder, other = api.client(), api.client()
    body = dumps({"role": "buyer", "name": "b", "public_key": holder.key.public.to_base64()})
    await assert_refused(
        api, "POST", "/v1/participants", body, signed(other, "POST", "/v1/participants", body), 401, "unknown_key"
    )
    forged = signed(other, "POST", "/v1/participants", body)
    forged["Signature-Input"] = forged["Signature-Input"].replace(other.keyid, holder.keyid)
    await assert_refused(api, "POST", "/v1/participants", body, forged, 401, "signature_invalid")
    assert participant_key_id(holder.key.public) == holder.keyid


async def test_public_base_url_is_the_signed_target(db: Any, aiohttp_client: Any, tmp_path: Any) -> None:
    from tests.exchange.registration_support import make_api

    api = await make_api(db, aiohttp_client, tmp_path, public_base_url="https://hetex.example/")
    c = api.client()
    body = dumps({"role": "buyer", "name": "b", "public_key": c.key.public.to_base64()})
    # signed for the public URL: accepted even though the test server listens elsewhere
    headers = sign_request("POST", "https://hetex.example/v1/participants", {}, body, c.key, c.keyid)
    headers["Content-Type"] = "application/json"
    status, view = await send(api, "POST", "/v1/participants", body, headers)
    assert status == 201, view
    # signed for the listening URL: refused
    c2 = api.client()
    body2 = dumps({"role": "buyer", "name": "b", "public_key": c2.key.public.to_base64()})
    status, problem = await send(api, "POST", "/v1/participants", body2, signed(c2, "POST", "/v1/participants", body2))
    assert (status, problem["reason"]) == (401, "signature_invalid")


async def test_unsigned_get_of_own_resources_is_refused(api: Api) -> None:
    for path in ("/v1/participants/me", "/v1/orders", "/v1/offers"):
        async with api.http.session.get(api.base_url + path) as resp:
            body = json.loads(await resp.text())
            assert (resp.status, body["reason"]) == (401, "signature_missing")


async def test_order_nonce_commits_with_the_order(api: Api, monkeypatch: Any) -> None:
    """POST /v1/orders remembers its nonce in the order's transaction: a request that fails stores
    nothing (not even the nonce), and its replay is refused for the same reason or, after a transient
    failure, performs exactly the request the buyer signed (once: the Idempotency-Key still holds)."""
    b = await api.buyer()
    # refused by validation: no row at all, and a replay is refused the same way
    bad = dumps(order_body(models=["XX-NOPE"]))
    headers = signed(b, "POST", "/v1/orders", bad)
    headers["Idempotency-Key"] = "bad"
    for _ in range(2):
        before = await api.counts()
        got, problem = await send(api, "POST", "/v1/orders", bad, headers)
        assert (got, problem["code"]) == (422, "invalid_input")
        assert await api.counts() == before
    # a failure inside the transaction, after the nonce was written: both are rolled back
    body = dumps(order_body())
    headers = signed(b, "POST", "/v1/orders", body)
    headers["Idempotency-Key"] = "k1"
    store = api.svc.orders.nonce_store
    remember = store.remember_in  # the order's transaction (exchange.storage.transactions) remembers it here

    async def remember_then_fail(tx: Any, claim: Any, now: int | None = None) -> None:
        await remember(tx, claim, now)
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "remember_in", remember_then_fail)
    before = await api.counts()
    got, problem = await send(api, "POST", "/v1/orders", body, headers)
    assert (got, problem["code"]) == (500, "internal_error")
    assert await api.counts() == before
    monkeypatch.undo()
    # the replay is the buyer's own request: stored once, with its nonce; a second replay is refused
    got, first = await send(api, "POST", "/v1/orders", body, headers)
    assert got == 201, first
    after = await api.counts()
    assert (after["orders"], after["seen_nonces"]) == (before["orders"] + 1, before["seen_nonces"] + 1)
    await assert_refused(api, "POST", "/v1/orders", body, headers, 401, "nonce_replayed")
    # a retry under the same key (fresh signature) is answered with the original and remembers its
    # nonce in the read's transaction, so replaying the retry is refused as well
    retry = signed(b, "POST", "/v1/orders", body)
    retry["Idempotency-Key"] = "k1"
    got, again = await send(api, "POST", "/v1/orders", body, retry)
    assert (got, again["id"]) == (200, first["id"])
    assert (await api.counts())["seen_nonces"] == after["seen_nonces"] + 1
    await assert_refused(api, "POST", "/v1/orders", body, retry, 401, "nonce_replayed")


async def _stored_beat(api: Api, cri: str) -> int:
    async with api.svc.sessions() as session:
        return int((await session.execute(select(Site.last_heartbeat_at).where(Site.cri == cri))).scalar_one())


async def test_heartbeat_is_nonce_free_and_its_replay_changes_nothing(api: Api) -> None:
    """A heartbeat is one UPDATE and remembers no nonce: it moves last_heartbeat_at forward to its signed
    `created`; its replay (same signature, inside the window) and an older heartbeat arriving late change
    nothing and are answered with the stored liveness; a heartbeat that changes nothing for another reason is
    refused for that reason (another provider's site, an unknown site), and so is its replay."""
    cap = await capacity(api)
    cri = cap.site["cri"]
    path = f"/v1/sites/{cri}/heartbeat"
    now = int(time.time())
    before = await api.counts()
    headers = signed(cap.provider, "POST", path, b"", created=now + 2)  # beats the registration's own time
    got, beat = await send(api, "POST", path, b"", headers)
    assert got == 200 and beat["cri"] == cri
    assert beat["last_heartbeat_at"] == await _stored_beat(api, cri) == min(now + 2, beat["last_heartbeat_at"])
    assert beat["live_until"] == beat["last_heartbeat_at"] + api.svc.settings.heartbeat_timeout_seconds
    assert await api.counts() == before  # no nonce row, no other row
    stored = beat["last_heartbeat_at"]
    for replay in (headers, signed(cap.provider, "POST", path, b"", created=now - 60)):  # a replay; an older beat
        got, again = await send(api, "POST", path, b"", replay)
        assert (got, again["last_heartbeat_at"]) == (200, stored), again
        assert await _stored_beat(api, cri) == stored and await api.counts() == before
    # a signed `created` ahead of the server's clock counts as now, never as the future
    ahead = signed(cap.provider, "POST", path, b"", created=int(time.time()) + 200)
    got, later = await send(api, "POST", path, b"", ahead)
    assert got == 200 and later["last_heartbeat_at"] <= int(time.time()) and later["last_heartbeat_at"] >= stored
    other = await api.provider()
    theirs = signed(other, "POST", path, b"")
    for _ in range(2):  # refused, and its replay refused for the same reason
        got, problem = await send(api, "POST", path, b"", theirs)
        assert (got, problem["code"]) == (403, "not_owner")
    me = await cap.provider.me()
    unknown = f"/v1/sites/{mint_site_cri(api.svc.settings.authority, 'CN-SH', me['operator_code'])}/heartbeat"
    got, problem = await send(api, "POST", unknown, b"", signed(cap.provider, "POST", unknown, b""))
    assert (got, problem["code"]) == (404, "unknown_site"), problem
