"""Forged, replayed, misdirected and stale peer messages are refused (401/409), counted by reason and never
stored per request;
a peer whose log was rewritten is detected by consistency proofs and reported."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from federation.keys import SigningKey
from federation.peering import LocalIdentity, PeerIdentity, sign_peer_request
from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"


async def post_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST exact bytes and headers; status and JSON answer."""
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def summary_message(src: Exchange, dst: Exchange, envelope: Any) -> dict[str, Any]:
    """A capacity_summary message from src to dst."""
    return src.fed.ctx.client.build(dst.fed.ctx.me.identity, "capacity_summary", {"summary": envelope})


async def test_replayed_request_is_refused_and_logged(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        url = b.url + "/v1/federation/summaries"
        msg = summary_message(a, b, await a.fed.summaries.build_summary())
        body, headers = sign_peer_request("POST", url, msg, a.fed.ctx.me)
        assert (await post_raw(url, body, headers))[0] == 200
        status, problem = await post_raw(url, body, headers)
        assert status == 401 and problem["reason"] == "nonce_replayed"
        assert b.fed.gate.refusals.counts == {"nonce_replayed": 1}
        assert await b.fed.events.recent(kind="refused_message") == []


async def test_message_replayed_to_another_peer_is_refused(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        url_b = b.url + "/v1/federation/summaries"
        msg = summary_message(a, b, await a.fed.summaries.build_summary())
        body, headers = sign_peer_request("POST", url_b, msg, a.fed.ctx.me)
        # same bytes and signature sent to C: the covered @target-uri is B's URL
        status, problem = await post_raw(c.url + "/v1/federation/summaries", body, headers)
        assert status == 401 and problem["reason"] == "signature_invalid"
        # re-signed for C's URL but still addressed to B: the body names the destination
        body2, headers2 = sign_peer_request("POST", c.url + "/v1/federation/summaries", msg, a.fed.ctx.me)
        status, problem = await post_raw(c.url + "/v1/federation/summaries", body2, headers2)
        assert status == 401 and problem["reason"] == "wrong_destination"
        assert c.fed.gate.refusals.counts == {"signature_invalid": 1, "wrong_destination": 1}
        assert await c.fed.events.recent(kind="refused_message") == []


async def test_forged_messages_are_refused(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        url = b.url + "/v1/federation/orders"
        order = {"order": {"origin_order_id": "o", "buyer_id": "x", "limits": {"*": 1}, "devices_max": 1,
                           "devices_min": 1, "start_at": 1, "end_at": 2}}  # fmt: skip
        # an unknown key claiming to be A
        forged_key = SigningKey.generate()
        mallory = LocalIdentity(PeerIdentity("A", a.fed.ctx.settings.origin, forged_key.public), forged_key)
        msg = a.fed.ctx.client.build(b.fed.ctx.me.identity, "order_offer", order)
        body, headers = sign_peer_request("POST", url, msg, mallory)
        status, problem = await post_raw(url, body, headers)
        assert status == 401 and problem["reason"] == "unknown_key"
        # C (a real peer of B) claiming to be A
        body, headers = sign_peer_request("POST", url, msg, c.fed.ctx.me)
        status, problem = await post_raw(url, body, headers)
        assert status == 401 and problem["reason"] == "wrong_sender"
        # A's signature over a body that was changed afterwards
        body, headers = sign_peer_request("POST", url, msg, a.fed.ctx.me)
        status, problem = await post_raw(url, body.replace(b'"devices_max":1', b'"devices_max":9'), headers)
        assert status == 401 and problem["reason"] == "digest_mismatch"
        # no signature at all
        status, problem = await post_raw(url, body, {"Content-Type": "application/json"})
        assert status == 401 and problem["reason"] == "signature_missing"
        # a stale message (sent an hour ago) with a fresh signature
        old = dict(msg, sent_at=int(time.time()) - 3600)
        body, headers = sign_peer_request("POST", url, old, a.fed.ctx.me)
        status, problem = await post_raw(url, body, headers)
        assert status == 401 and problem["reason"] == "stale_message"
        reasons = ["digest_mismatch", "signature_missing", "stale_message", "unknown_key", "wrong_sender"]
        assert b.fed.gate.refusals.counts == dict.fromkeys(reasons, 1)
        assert b.fed.stats()["refused_messages"] == dict.fromkeys(reasons, 1)
        assert await b.fed.events.recent(kind="refused_message") == []
        assert await b.fed.inbound.holds_view() == []


async def test_unsigned_wrongly_signed_stale_and_expired_summaries_are_refused(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        url = b.url + "/v1/federation/summaries"

        async def push(src: Exchange, envelope: Any) -> tuple[int, dict[str, Any]]:
            body, headers = sign_peer_request("POST", url, summary_message(src, b, envelope), src.fed.ctx.me)
            return await post_raw(url, body, headers)

        good = await a.fed.summaries.build_summary()
        newer = await a.fed.summaries.build_summary()
        assert (await push(a, newer))[0] == 200
        status, problem = await push(a, good)  # older version
        assert status == 409 and problem["reason"] == "stale_version"
        status, problem = await push(a, dict(newer, signatures=[]))
        assert status == 401 and problem["reason"] == "unsigned"
        status, problem = await push(a, await c.fed.summaries.build_summary())  # C's summary relayed by A
        assert status == 401 and problem["reason"] == "bad_signature"
        a.fed.ctx.clock = lambda: int(time.time()) - 3600  # A signs a summary that expired long ago
        a.fed.ctx.settings = a.fed.ctx.settings.model_copy(update={"federation_summary_ttl_seconds": 10})
        expired = await a.fed.summaries.build_summary()
        a.fed.ctx.clock = fedkit_now
        status, problem = await push(a, expired)
        assert status == 401 and problem["reason"] == "expired"
        kept = {s["origin"]: s["version"] for s in await b.fed.summaries.summaries_view()}
        assert kept == {"A": 2}
        reasons = sorted(e["detail"]["reason"] for e in await b.fed.events.recent(kind="refused_summary"))
        assert reasons == ["bad_signature", "expired", "unsigned"]  # a stale version is refused, not an attack


def remove_database(url: str) -> None:
    """Delete a SQLite database file with its WAL files (the peer 'loses' its history)."""
    db_file = Path(url.split("///", 1)[1])
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_file) + suffix).unlink(missing_ok=True)


def fedkit_now() -> int:
    """Wall clock (restores a patched clock)."""
    return int(time.time())


async def test_rewritten_peer_log_is_detected(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):

        async def grow(n: int, tag: str) -> None:
            for i in range(n):
                async with b.svc.sessions.begin() as s:
                    await b.svc.ledger.append(s, "contract", f"{tag}-{i}", {"n": i, "tag": tag})

        peer_b = await a.fed.peers.peer("B")
        await grow(3, "x")
        assert (await a.fed.resync.check_peer_log(peer_b))["status"] == "consistent"
        await grow(4, "y")
        assert (await a.fed.resync.check_peer_log(peer_b)) == {"status": "consistent", "size": 7}
        peers = {p["authority"]: p for p in await a.fed.peers.peers_view()}
        assert peers["B"]["log_status"] == "consistent" and peers["B"]["checkpoint"]["size"] == 7

        # B loses its database and rebuilds a different history with the same key
        key = await b.svc.identity.current()
        await fedkit.stop_exchange(b)
        remove_database(b.db_url)
        b2 = await fedkit.start_exchange(tmp_path, "B", port=int(b.url.rsplit(":", 1)[1]), reuse_key=key)
        try:

            async def grow2(n: int) -> None:
                for i in range(n):
                    async with b2.svc.sessions.begin() as s:
                        await b2.svc.ledger.append(s, "contract", f"z-{i}", {"n": i, "tag": "rewritten"})

            await grow2(9)
            result = await a.fed.resync.check_peer_log(peer_b)
            assert result["status"] == "inconsistent" and "not consistent with 7" in result["problem"]
            peers = {p["authority"]: p for p in await a.fed.peers.peers_view()}
            assert peers["B"]["log_status"] == "inconsistent"
            (event,) = await a.fed.events.recent(kind="log_inconsistent")
            assert event["peer"] == "B"
            # while inconsistent, B's summaries are not used for forwarding
            await b2.fed.peers.add_peer(a.url, a.fed.ctx.identity_view()["verifier_key"], "A")
            with b2.seed() as s:
                fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
            with a.seed() as s:
                order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
            await b2.fed.summaries.publish_summary()
            assert {x["origin"] for x in await a.fed.summaries.summaries_view()} == {
                "B"
            }  # kept, but not trusted for trade
            assert await a.fed.outbound.forward_order(order) == {"status": "no_peer"}
        finally:
            await fedkit.stop_exchange(b2)
