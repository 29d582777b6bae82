"""Federation reads (contracts, holds, mirrored records, events, peers) need a signed request by the operator
or by a peer exchange; a peer sees only its own records, buyers and providers are refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from exchange.client import HetexClient
from exchange.storage.federation import FederationHold, Peer, PeerContract
from federation.keys import SigningKey
from federation.peering import sign_peer_get
from identifiers.ids import new_id_str
from tests.federation import fedkit
from tests.federation.fedkit import Exchange

H100 = "NV-H100-SXM"
SIGNED_READS = (
    "/v1/federation/contracts",
    "/v1/federation/holds",
    "/v1/federation/mirrored",
    "/v1/federation/events",
    "/v1/federation/peers",
)


async def get_raw(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET with exactly these headers; status and JSON answer."""
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.json()


def seed_peer_records(owner: Exchange, peer: str) -> tuple[str, str]:
    """A hold granted to `peer` at `owner` and a contract with it (rows as the trade flow leaves them)."""
    now = int(time.time())
    with owner.seed() as s:
        buyer = fedkit.seed_buyer(s, f"proxy for {peer}")
        order = fedkit.seed_order(s, buyer, devices=1, models=[H100], limit_fen=3000)
        hold_id, contract_id = new_id_str(), new_id_str()
        s.add(
            FederationHold(
                id=hold_id, origin_authority=peer, message_id=new_id_str(), order_id=order, status="held",
                devices=1, start_at=now, end_at=now + 3600, expires_at=now + 60, created_at=now,
            )
        )  # fmt: skip
        s.add(
            PeerContract(
                contract_id=contract_id, side="owner", peer_authority=peer, order_id=order, hold_id=hold_id,
                pool_cri="hx:pool", model=H100, region="CN-NM", devices=1, start_at=now, end_at=now + 3600,
                price_fen=1500, envelope={"signatures": []}, created_at=now,
            )
        )  # fmt: skip
    return hold_id, contract_id


async def test_unsigned_reads_are_refused(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (_a, b):
        for path in SIGNED_READS:
            status, problem = await get_raw(b.url + path)
            assert status == 401, path
            assert problem["reason"] == "signature_missing"
        # what an exchange publishes for anyone stays public
        for path in ("/v1/federation/summaries", "/v1/federation/identity", "/v1/federation/checkpoint"):
            assert (await get_raw(b.url + path))[0] == 200, path


async def test_buyers_and_providers_are_forbidden(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (_a, b):
        for role in ("buyer", "provider"):
            async with HetexClient(b.url, SigningKey.generate()) as client:
                await client.register(role, f"a {role}")
                for path in SIGNED_READS:
                    url = client.url(path)
                    status, problem = await get_raw(url, client.sign("GET", url, b""))
                    assert status == 403, (role, path)
                    assert problem["reason"] == "role_forbidden"


async def test_peer_sees_only_its_own_and_operator_sees_all(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B", "C"]) as (a, b, _c):
        hold_a, contract_a = seed_peer_records(b, "A")
        hold_c, contract_c = seed_peer_records(b, "C")

        async def as_a(path: str) -> tuple[int, Any]:
            url = b.url + path
            return await get_raw(url, sign_peer_get(url, a.fed.ctx.me))

        status, body = await as_a("/v1/federation/holds")
        assert status == 200 and [h["hold_id"] for h in body["holds"]] == [hold_a]
        status, body = await as_a("/v1/federation/contracts")
        assert status == 200 and [x["contract_id"] for x in body["contracts"]] == [contract_a]
        status, body = await as_a("/v1/federation/contracts?peer=A")
        assert status == 200 and [x["contract_id"] for x in body["contracts"]] == [contract_a]
        status, problem = await as_a("/v1/federation/contracts?peer=C")
        assert status == 403 and problem["reason"] == "not_owner"
        for path in ("/v1/federation/events", "/v1/federation/peers"):
            status, problem = await as_a(path)
            assert status == 403 and problem["reason"] == "role_forbidden", path
        # a replayed peer GET is refused like any signed request
        url = b.url + "/v1/federation/holds"
        headers = sign_peer_get(url, a.fed.ctx.me)
        assert (await get_raw(url, headers))[0] == 200
        status, problem = await get_raw(url, headers)
        assert status == 401 and problem["reason"] == "nonce_replayed"

        key = SigningKey.generate()
        await b.svc.participants.add_by_operator("operator", "operator", key.public.to_base64())
        async with HetexClient(b.url, key) as operator:
            holds = await operator.request("GET", "/v1/federation/holds")
            assert {h["hold_id"] for h in holds["holds"]} == {hold_a, hold_c}
            contracts = await operator.request("GET", "/v1/federation/contracts", params={"peer": "C"})
            assert [x["contract_id"] for x in contracts["contracts"]] == [contract_c]
            peers = await operator.request("GET", "/v1/federation/peers")
            assert {p["authority"] for p in peers["peers"]} == {"A", "C"}
            assert "events" in await operator.request("GET", "/v1/federation/events")


async def test_removed_peer_key_reads_nothing(tmp_path: Path) -> None:
    async with fedkit.federation(tmp_path, ["A", "B"]) as (a, b):
        seed_peer_records(b, "A")
        with b.seed() as s:
            row = s.get(Peer, "A")
            assert row is not None
            row.status = "removed"
        url = b.url + "/v1/federation/holds"
        status, problem = await get_raw(url, sign_peer_get(url, a.fed.ctx.me))
        assert status == 403 and problem["reason"] == "role_forbidden"
