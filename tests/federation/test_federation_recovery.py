"""Recovery of a peer flagged `inconsistent`: re-verified on the operator's request (API and CLI). A peer flagged
because a proof was corrupted in transit is restored once its consistency proofs verify; a peer that rewrote its
log stays flagged, with the two signed checkpoints kept and shown."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.client import HetexClient, RemoteError
from federation.keys import SigningKey, save_signing_key
from federation.note import NoteVerifier, verify_checkpoint
from tests.federation import fedkit
from tests.federation.fedkit import Exchange
from tests.federation.test_federation_security import remove_database

H100 = "NV-H100-SXM"


async def grow(ex: Exchange, n: int, tag: str) -> None:
    """Append `n` records to an exchange's log."""
    for i in range(n):
        async with ex.svc.sessions.begin() as s:
            await ex.svc.ledger.append(s, "contract", f"{tag}-{i}", {"n": i, "tag": tag})


def corrupt_next_proof(ex: Exchange) -> None:
    """The next consistency proof `ex` fetches arrives with one hash flipped (a fault in transit)."""
    client = ex.fed.ctx.client
    real_get = client.get

    async def get(peer: Any, path: str) -> Any:
        answer = await real_get(peer, path)
        if path.startswith("/v1/federation/consistency") and client.get is get:
            client.get = real_get
            first = bytearray(base64.b64decode(answer["hashes"][0]))
            first[0] ^= 0xFF
            answer = dict(answer, hashes=[base64.b64encode(bytes(first)).decode(), *answer["hashes"][1:]])
        return answer

    client.get = get


async def operator_of(ex: Exchange, tmp_path: Path) -> tuple[SigningKey, Path]:
    """An operator key registered at `ex`, and its PEM file (for the CLI)."""
    key = SigningKey.generate()
    await ex.svc.participants.add_by_operator("operator", "operator", key.public.to_base64())
    return key, save_signing_key(tmp_path / f"operator-{ex.authority}.pem", key)


async def cli(*argv: str) -> int:
    """Run `hetex` in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


def log_status(peers: list[dict[str, Any]], authority: str) -> str:
    return str(next(p for p in peers if p["authority"] == authority)["log_status"])


async def test_wrongly_flagged_peer_is_restored_after_its_proofs_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        peer_b = await a.fed.peers.peer("B")
        await grow(b, 3, "x")
        assert (await a.fed.resync.check_peer_log(peer_b))["status"] == "consistent"
        await grow(b, 4, "y")
        corrupt_next_proof(a)
        flagged = await a.fed.resync.check_peer_log(peer_b)
        assert flagged["status"] == "inconsistent" and "not consistent with 3" in flagged["problem"]

        key, pem = await operator_of(a, tmp_path)
        async with HetexClient(a.url, key) as operator:
            (ev,) = (await operator.request("GET", "/v1/federation/evidence", params={"peer": "B"}))["evidence"]
            assert (ev["kept"]["size"], ev["seen"]["size"], ev["resolution"]) == (3, 7, None)
            verifier = [NoteVerifier(peer_b.origin, peer_b.public_key)]
            for side in ("kept", "seen"):  # both are B's signed checkpoints: they verify offline with B's key
                cp = verify_checkpoint(ev[side]["note"], verifier, origin=peer_b.origin)
                assert base64.b64encode(cp.root).decode() == ev[side]["root"]
            # while flagged, B's summary is not used for forwarding
            with a.seed() as s:
                order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
            with b.seed() as s:
                fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
            await b.fed.summaries.publish_summary()
            assert await a.fed.outbound.forward_order(order) == {"status": "no_peer"}
            # nor when a hub routes the order to B: the buyer skips a flagged owner (specs/federation.md 9.4)
            for _hub_round in range(3):  # the hub routes it there every round: one event says so, not one a round
                assert await a.fed.outbound.forward_order(order, [("B", 2, H100, "CN-NM")]) == {"status": "no_peer"}
            (skipped,) = await a.fed.events.recent(kind="skipped_flagged_owner")
            assert skipped["peer"] == "B" and skipped["detail"] == {"order_id": order}

            # only the operator may re-verify
            async with HetexClient(a.url, SigningKey.generate()) as buyer:
                await buyer.register("buyer", "a buyer")
                with pytest.raises(RemoteError) as refused:
                    await buyer.request("POST", "/v1/peers/B/reverify")
                assert refused.value.status == 403
            with pytest.raises(RemoteError) as unknown:
                await operator.request("POST", "/v1/peers/ZZ/reverify")
            assert unknown.value.status == 404

            capsys.readouterr()
            assert await cli("peer", "reverify", "B", "--url", a.url, "--key", str(pem), "--json") == 0
            result = json.loads(capsys.readouterr().out)
            assert result == {"peer": "B", "status": "consistent", "restored": True, "size": 7}
            assert log_status(await a.fed.peers.peers_view(), "B") == "consistent"
            (ev,) = (await operator.request("GET", "/v1/federation/evidence"))["evidence"]
            assert ev["resolution"] == "restored"
            assert [e["peer"] for e in await a.fed.events.recent(kind="log_restored")] == ["B"]
            # trusted again: the order is forwarded to B and filled there
            assert (await a.fed.outbound.forward_order(order))["status"] == "committed"
            # and later growth is checked from the restored checkpoint
            await grow(b, 2, "z")
            assert (await a.fed.resync.check_peer_log(peer_b))["status"] == "consistent"


async def test_rewritten_log_stays_flagged_with_its_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        peer_b = await a.fed.peers.peer("B")
        await grow(b, 5, "x")
        assert (await a.fed.resync.check_peer_log(peer_b)) == {"status": "consistent", "size": 5}
        # B loses its database and rebuilds a different, longer history with the same key
        key_b = await b.svc.identity.current()
        await fedkit.stop_exchange(b)
        remove_database(b.db_url)
        b2 = await fedkit.start_exchange(tmp_path, "B", port=int(b.url.rsplit(":", 1)[1]), reuse_key=key_b)
        try:
            await grow(b2, 8, "rewritten")
            assert (await a.fed.resync.check_peer_log(peer_b))["status"] == "inconsistent"

            key, pem = await operator_of(a, tmp_path)
            async with HetexClient(a.url, key) as operator:
                answer = await operator.request("POST", "/v1/peers/B/reverify")
                assert answer["status"] == "inconsistent" and answer["restored"] is False
                (problem,) = answer["problems"]  # its current log extends the conflicting checkpoint, not ours
                assert problem.startswith("kept: checkpoint") and "not consistent with 5" in problem
                (ev,) = answer["evidence"]
                assert ev["kept"]["size"] == 5 and ev["seen"]["size"] > 5 and ev["seen"]["root"] != ev["kept"]["root"]
                # growing the rewritten log further does not launder it: it still does not extend checkpoint 5
                await grow(b2, 3, "more")
                again = await operator.request("POST", "/v1/peers/B/reverify")
                assert again["restored"] is False and log_status(await a.fed.peers.peers_view(), "B") == "inconsistent"
                listed = (await operator.request("GET", "/v1/federation/evidence", params={"peer": "B"}))["evidence"]
                assert [(e["id"], e["resolution"]) for e in listed] == [(ev["id"], None)]

            capsys.readouterr()
            assert await cli("peer", "reverify", "B", "--url", a.url, "--key", str(pem)) == 1
            capsys.readouterr()
            assert await cli("peer", "evidence", "B", "--url", a.url, "--key", str(pem), "--json") == 0
            (shown,) = json.loads(capsys.readouterr().out)["evidence"]
            assert shown["seen"]["note"] == ev["seen"]["note"] and shown["kept"]["note"] == ev["kept"]["note"]
            assert len(await a.fed.events.recent(kind="log_reverify_failed")) == 3
        finally:
            await fedkit.stop_exchange(b2)


async def test_hub_does_not_clear_on_a_member_it_flagged_until_restored(tmp_path: Path) -> None:
    """A member's log flagged at the hub: its summaries are no longer used (specs/federation.md 5), so the
    hub's rounds leave its curves out and route nothing to it; restored, it is routed to again."""
    h = await fedkit.start_exchange(tmp_path, "H", federation_hub_mode=True, federation_hub_round_interval_seconds=0)
    a, b = [
        await fedkit.start_exchange(tmp_path, m, federation_hub="H", federation_forward_after_seconds=0)
        for m in ("A", "B")
    ]
    try:
        await fedkit.peer_all([h, a, b])
        peer_b = await h.fed.peers.peer("B")
        await grow(b, 3, "x")
        assert (await h.fed.resync.check_peer_log(peer_b))["status"] == "consistent"
        await grow(b, 2, "y")
        corrupt_next_proof(h)
        assert (await h.fed.resync.check_peer_log(peer_b))["status"] == "inconsistent"
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        for m in (a, b):
            await m.svc.hub.publish()
        flagged = await h.svc.hub.hub_round()
        assert flagged["status"] == "cleared" and flagged["members"] == ["A"] and flagged["routes"] == 0, flagged

        assert (await h.fed.recovery.reverify("B"))["restored"] is True
        for m in (a, b):
            await m.svc.hub.publish()
        restored = await h.svc.hub.hub_round()
        assert restored["status"] == "cleared" and "B" in restored["members"] and restored["routes"] == 1, restored
        deadline = time.monotonic() + 20
        while fedkit.order_row(a.db_url, order)["status"] != "filled":  # A asks B for the routed devices
            assert time.monotonic() < deadline, "order routed to B not filled"
            await asyncio.sleep(0.05)
    finally:
        for ex in (h, a, b):
            await fedkit.stop_exchange(ex)
