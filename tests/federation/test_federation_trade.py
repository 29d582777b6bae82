"""Cross-exchange trades between in-process exchanges on loopback: forwarding, holds, two-party contracts,
both logs, double-sell, hold expiry, a peer down, idempotent messages, mirroring, resolution."""

from __future__ import annotations

import asyncio
import tarfile
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from exchange.storage.federation import OutboundHold
from federation.dsse import verify_envelope
from federation.keys import Keyring
from federation.peering import CONTRACT_PAYLOAD_TYPE, envelope_json
from identifiers.cri import mint_site_cri
from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"
ASCEND = "HW-910B3"


def keyring_of(*exchanges: Exchange) -> Keyring:
    """Trust exactly these exchanges' keys."""
    ring = Keyring()
    for ex in exchanges:
        ident = ex.fed.ctx.me.identity
        ring.add_named(ident.origin, ident.public_key)
    return ring


async def test_buyer_at_a_gets_capacity_only_b_and_c_have(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        with a.seed() as s:
            fedkit.seed_pool(s, "A", region="CN-SH", model=ASCEND, devices=8, ask_fen=900)
            buyer = fedkit.seed_buyer(s)
            order = fedkit.seed_order(s, buyer, devices=12, models=[H100], limit_fen=3000)
        with b.seed() as s:
            pb = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with c.seed() as s:
            pc = fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=8, ask_fen=2500)
        await fedkit.publish_all([a, b, c])
        results = await a.fed.outbound.forward_open_orders()
        assert [r["status"] for r in results] == ["committed"]
        assert fedkit.order_row(a.db_url, order) == {"status": "filled", "filled_devices": 12, "quantity_devices": 12}

        a_contracts = await a.fed.reads.contracts_view()
        assert sorted((x["peer"], x["devices"], x["side"]) for x in a_contracts) == [
            ("B", 8, "buyer"),
            ("C", 4, "buyer"),
        ]
        for owner, pool in ((b, pb), (c, pc)):
            owned = await owner.fed.reads.contracts_view(peer="A")
            assert len(owned) == 1 and owned[0]["side"] == "owner"
            mine = next(x for x in a_contracts if x["contract_id"] == owned[0]["contract_id"])
            # both signatures on both sides, and the same payload
            for env in (owned[0]["envelope"], mine["envelope"]):
                verify_envelope(env, keyring_of(a, owner), payload_type=CONTRACT_PAYLOAD_TYPE, threshold=2)
            assert envelope_json(owned[0]["envelope"]) == envelope_json(mine["envelope"])
            # logged in both logs
            for ex, entry_index in ((a, mine["log_index"]), (owner, owned[0]["log_index"])):
                stored = await ex.svc.ledger.entry(entry_index)
                assert stored.record_type == "contract" and stored.record_id == mine["contract_id"]
                assert len(stored.envelope["signatures"]) == 2
                report = await ex.svc.ledger.verify_log()
                assert report.ok, report
            # the owner holds the pool with a real contract row (capacity reserved)
            rows = fedkit.contracts_on_pool(owner.db_url, pool.pool_id)
            assert sum(r.devices for r in rows) == owned[0]["devices"]
        # the local Ascend pool at A was not used (wrong model)
        assert (await a.fed.inbound.holds_view()) == []


async def test_summaries_are_signed_versioned_and_kept_per_origin(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=16, ask_fen=2000)
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=1500)
        await b.fed.summaries.publish_summary()
        await b.fed.summaries.publish_summary()
        kept = {x["origin"]: x for x in await a.fed.summaries.summaries_view()}
        assert kept["B"]["version"] == 2 and kept["B"]["fresh"]
        (cls,) = kept["B"]["classes"]
        assert cls == {
            "region": "CN-NM",
            "model": H100,
            "free_devices": 24,
            "max_pool_free": 16,
            "ask_ladder": [[1500, 8], [2000, 16]],
        }
        async with aiohttp.ClientSession() as http, http.get(a.url + "/v1/federation/summaries") as resp:
            body = await resp.json()
        assert {x["origin"] for x in body["summaries"]} == {"B"}


async def test_shaped_order_is_placed_by_one_owner_within_its_shape(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        with a.seed() as s:
            buyer = fedkit.seed_buyer(s)
            order = fedkit.seed_order(s, buyer, devices=12, models=[H100], limit_fen=3000, max_pools=1)
        with b.seed() as s:  # cheaper, but 12 devices need both pools
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with c.seed() as s:
            pc = fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=16, ask_fen=2500)
        await fedkit.publish_all([a, b, c])
        (result,) = await a.fed.outbound.forward_open_orders()
        assert result["status"] == "committed"
        assert fedkit.order_row(a.db_url, order)["filled_devices"] == 12
        assert {(x["peer"], x["pool_cri"], x["devices"]) for x in await a.fed.reads.contracts_view()} == {
            ("C", pc.pool_cri, 12)
        }
        assert await b.fed.reads.contracts_view() == []
        with a.seed() as s:
            errors = {o.peer_authority: o.error for o in s.scalars(select(OutboundHold))}
        assert errors["B"] == "shape_unsatisfiable (max_pools)"


async def test_double_sell_race_exactly_one_wins(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, c):
        with b.seed() as s:
            pool = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        orders = {}
        for ex in (a, c):
            with ex.seed() as s:
                orders[ex.authority] = fedkit.seed_order(
                    s, fedkit.seed_buyer(s), devices=8, models=[H100], limit_fen=3000
                )
        await fedkit.publish_all([a, b, c])
        ra, rc = await asyncio.gather(
            a.fed.outbound.forward_order(orders["A"]), c.fed.outbound.forward_order(orders["C"])
        )
        statuses = sorted([ra["status"], rc["status"]])
        # the loser either lost the hold race (unfilled) or, when the winner's commit already reached B's
        # published summary, saw no peer left to ask (no_peer): either way exactly one wins
        assert statuses[0] == "committed" and statuses[1] in ("no_peer", "unfilled"), (ra, rc)
        rows = fedkit.contracts_on_pool(b.db_url, pool.pool_id)
        assert sum(r.devices for r in rows) == 8
        filled = [fedkit.order_row(ex.db_url, orders[ex.authority])["filled_devices"] for ex in (a, c)]
        assert sorted(filled) == [0, 8]


async def test_hold_expires_and_capacity_returns(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"], federation_hold_ttl_seconds=1) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=8, models=[H100], limit_fen=3000)
        await fedkit.publish_all([a, b])
        peer_b = await a.fed.peers.peer("B")
        msg = a.fed.ctx.client.build(
            peer_b,
            "order_offer",
            {
                "order": {
                    "origin_order_id": order,
                    "buyer_id": "x",
                    "models": [H100],
                    "regions": None,
                    "limits": {"*": 3000},
                    "billing_mode": "per_minute",
                    "devices_max": 8,
                    "devices_min": 8,
                    "start_at": int(time.time()),
                    "end_at": int(time.time()) + 3600,
                }
            },
        )
        held = await a.fed.ctx.client.send(peer_b, "/v1/federation/orders", msg)
        assert held["status"] == "held" and held["devices"] == 8
        # while held, the capacity is reserved: B's summary shows nothing free
        await b.fed.summaries.publish_summary()
        assert (await a.fed.summaries.summaries_view())[0]["classes"] == []
        await asyncio.sleep(2.1)
        assert await b.fed.inbound.expire_holds() == [held["hold_id"]]
        # committing an expired hold is refused; capacity is free again
        commit = a.fed.ctx.client.build(peer_b, "hold_commit", {"hold_id": held["hold_id"], "contracts": [{}]})
        answer = await a.fed.ctx.client.send(peer_b, f"/v1/federation/holds/{held['hold_id']}/commit", commit)
        assert answer == {"status": "refused", "reason": "hold_expired", "hold_id": held["hold_id"]}
        await b.fed.summaries.publish_summary()  # the service does this on demand after expiring holds
        result = await a.fed.outbound.forward_order(order)
        assert result["status"] == "committed"
        events = await b.fed.events.recent(kind="hold_expired")
        assert [e["detail"]["hold_id"] for e in events] == [held["hold_id"]]


async def test_retry_returns_stored_answer_and_reused_id_conflicts(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        peer_b = await a.fed.peers.peer("B")
        order = {
            "origin_order_id": "o1",
            "buyer_id": "x",
            "limits": {"*": 3000},
            "models": [H100],
            "devices_max": 4,
            "devices_min": 1,
            "start_at": int(time.time()),
            "end_at": int(time.time()) + 3600,
        }
        msg = a.fed.ctx.client.build(peer_b, "order_offer", {"order": order})
        first = await a.fed.ctx.client.send(peer_b, "/v1/federation/orders", msg)
        again = await a.fed.ctx.client.send(peer_b, "/v1/federation/orders", dict(msg, sent_at=msg["sent_at"] + 1))
        assert again.pop("replayed") is True
        assert again == first
        assert len(await b.fed.inbound.holds_view()) == 1
        changed = dict(msg, body={"order": dict(order, devices_max=5)})
        with pytest.raises(fedkit_refused()) as info:
            await a.fed.ctx.client.send(peer_b, "/v1/federation/orders", changed)
        assert info.value.status == 409 and info.value.problem["code"] == "message_id_reused"


def fedkit_refused() -> type[Exception]:
    from exchange.services.peer_client import PeerRefusedError

    return PeerRefusedError


async def test_peer_down_does_not_stop_local_market(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"], federation_peer_timeout_seconds=1) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with a.seed() as s:
            fedkit.seed_pool(s, "A", region="CN-SH", model=ASCEND, devices=8, ask_fen=900)
            buyer = fedkit.seed_buyer(s)
            remote = fedkit.seed_order(s, buyer, devices=4, models=[H100], limit_fen=3000)
            local = fedkit.seed_order(s, buyer, devices=4, models=[ASCEND], limit_fen=3000)
        await fedkit.publish_all([a, b])
        await b.server.close()  # B goes away after A learned its summary
        t0 = time.perf_counter()
        result = await a.fed.outbound.forward_order(remote)
        assert result["status"] == "unfilled"
        assert time.perf_counter() - t0 < 3
        summary = await a.svc.rounds.run_round("test")  # A's own clearing round, B still down
        assert summary.matched_devices == 4
        assert fedkit.order_row(a.db_url, local)["status"] == "filled"
        assert fedkit.order_row(a.db_url, remote)["status"] == "open"
        peers = {p["authority"]: p for p in await a.fed.peers.peers_view()}
        assert peers["B"]["reachable"] is False and peers["B"]["last_error"]


async def test_mirror_usage_to_buyer_exchange(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        await fedkit.publish_all([a, b])
        assert (await a.fed.outbound.forward_order(order))["status"] == "committed"
        (owned,) = await b.fed.reads.contracts_view()
        usage = {"usage_id": "u-1", "contract_id": owned["contract_id"], "device_hours": 2, "seq": 1}
        async with b.svc.sessions.begin() as s:
            appended = await b.svc.ledger.append(s, "usage", "u-1", usage)
            # the usage and settlement services call this hook after logging a record (composition wires it)
            assert b.svc.usage.on_logged == b.svc.settlement.on_logged == b.fed.mirror.enqueue_mirror
            assert await b.svc.usage.on_logged(s, owned["contract_id"], "usage", "u-1", appended.envelope)
        assert await b.fed.mirror.deliver_outbox() == {"sent": 1, "failed": 0}
        (mirrored,) = await a.fed.mirror.mirrored_view()
        assert mirrored["record_id"] == "u-1" and mirrored["peer"] == "B"
        entry = await a.svc.ledger.entry(mirrored["log_index"])
        assert entry.record_type == "usage"
        verify_envelope(entry.envelope, keyring_of(a, b), payload_type="application/vnd.hetex.usage+json", threshold=2)
        # the buyer's exchange lists B's key, so an auditor trusts the mirrored record
        ring = await a.fed.peers.peer_keyring()
        verify_envelope(entry.envelope, ring, payload_type="application/vnd.hetex.usage+json")
        assert (await a.svc.ledger.verify_log()).ok
        # a usage batch looks its contracts up once before the log lock (prepare_mirror); a contract found local
        # is remembered by the process, an owned cross-exchange contract is still mirrored in every transaction
        assert b.svc.usage.before_logged == b.fed.mirror.prepare_mirror
        local_id = "01890000-0000-7000-8000-000000000001"
        for record in ("u-2", "u-3"):
            async with b.svc.sessions.begin() as s:
                await b.fed.mirror.prepare_mirror(s, [owned["contract_id"], local_id])
                assert not await b.fed.mirror.enqueue_mirror(s, local_id, "usage", record, appended.envelope)
                assert await b.fed.mirror.enqueue_mirror(s, owned["contract_id"], "usage", record, appended.envelope)


async def test_resolve_redirects_to_owning_peer(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        with b.seed() as s:
            pool = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        async with aiohttp.ClientSession() as http:
            async with http.get(a.url + f"/v1/resolve/{pool.pool_cri}", allow_redirects=False) as resp:
                assert resp.status == 307
                assert resp.headers["Location"] == f"{b.url}/v1/resolve/{pool.pool_cri}"
            async with http.get(a.url + f"/v1/resolve/{pool.pool_cri}") as resp:
                assert resp.status == 200
                assert (await resp.json())["cri"] == pool.pool_cri
            unknown = str(mint_site_cri("Z", "CN-NM", "PR1"))
            async with http.get(a.url + f"/v1/resolve/{unknown}", allow_redirects=False) as resp:
                assert resp.status == 404
                assert (await resp.json())["code"] == "unknown_authority"


async def test_audit_exports_at_both_exchanges_verify_with_peer_keys(tmp_path: Path) -> None:
    from exchange.audit.verify import verify_bundle
    from exchange.services.audit import ExportRequest
    from federation.canonical import canonical_bytes
    from federation.dsse import record_payload_type, sign_envelope
    from federation.keys import SigningKey
    from tests.exchange.auditkit import register_node

    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[H100], limit_fen=3000)
        await fedkit.publish_all([a, b])
        assert (await a.fed.outbound.forward_order(order))["status"] == "committed"
        (owned,) = await b.fed.reads.contracts_view()
        usage = {
            "usage_id": "u-9",
            "contract_id": owned["contract_id"],
            "device_minutes": 120,
            "seq": 1,
            "period_end": int(time.time()),
        }
        node = SigningKey.generate()  # the provider's node signs its usage (issue 10 bug 9: its key is exported)
        node_kid = await register_node(b.svc.ledger, node)
        signed = sign_envelope(record_payload_type("usage"), canonical_bytes(usage), [(node_kid, node)])
        async with b.svc.sessions.begin() as s:
            appended = await b.svc.ledger.append_signed(s, "usage", "u-9", signed)
            await b.fed.mirror.enqueue_mirror(s, owned["contract_id"], "usage", "u-9", appended.envelope)
        await b.fed.mirror.deliver_outbox()
        now = int(time.time())
        for ex in (a, b):
            with ex.seed() as s:
                regulator = fedkit._participant(s, "regulator", "regulator")
            status = await ex.svc.audit.create_export(
                regulator, ExportRequest(period_from=now - 3600, period_to=now + 3600)
            )
            await ex.svc.audit.wait(status.id)
            bundle = await ex.svc.audit.bundle_path(regulator, status.id)
            report = verify_bundle(bundle, trusted_keys=[ex.fed.ctx.me.identity.public_key])
            assert report.ok, [p for p in report.problems]
            # both exports hold the two-signature contract and the usage record (mirrored at A, signed by B)
            assert report.totals is not None and report.totals["records_by_kind"] == {"contract": 1, "usage": 1}
            other = b if ex is a else a
            with tarfile.open(bundle) as tar:
                names = {m.name.rsplit("/", 1)[-1] for m in tar.getmembers()}
            assert f"{other.fed.ctx.me.key_id}.json" in names  # the peer's key is listed for the verifier
