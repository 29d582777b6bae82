"""Issue 11 bug 8: commercial terms are readable only by the parties, the regulator and the operator, while the
public log stays verifiable by anyone (leaf hashes, proofs, checkpoints); rounds publish aggregates only."""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any

import pytest

from exchange.client import HetexClient, RemoteError
from exchange.services.disclosure import record_contract_id, round_disclosure
from exchange.services.principals import Principal
from federation.keys import Keyring, VerifyKey
from federation.merkle import leaf_hash, verify_inclusion
from federation.note import verify_checkpoint
from tests.exchange.registration_support import Api, capacity, make_api, order_body

_key = itertools.count()


@pytest.fixture
async def api(db: Any, aiohttp_client: Any, tmp_path: Path) -> Api:
    return await make_api(db, aiohttp_client, tmp_path, checkpoint_interval_seconds=0)


async def operator(api: Api) -> HetexClient:
    c = api.client()
    await api.svc.participants.add_by_operator("operator", "Exchange operator", c.key.public.to_base64())
    return c


async def submit(buyer: HetexClient, **overrides: Any) -> dict[str, Any]:
    return await buyer.submit_order(order_body(**overrides), f"k-{next(_key)}")


def _b(text: str) -> bytes:
    return base64.b64decode(text)


async def refused(client: HetexClient, path: str, *, signed: bool = True) -> RemoteError:
    with pytest.raises(RemoteError) as err:
        await client.request("GET", path, signed=signed)
    problem = err.value.problem
    assert "payload" not in problem and "envelope" not in problem and "buyer_price_fen" not in str(problem)
    return err.value


async def test_log_records_are_read_by_parties_and_proved_by_anyone(api: Api) -> None:
    cap = await capacity(api, devices=8)
    buyer, stranger = await api.buyer("Buyer B"), await api.buyer("Buyer C")
    await submit(buyer)
    op = await operator(api)
    rnd = await op.request("POST", "/v1/rounds")
    (contract_id,) = rnd["contract_ids"]
    contract = await buyer.request("GET", f"/v1/contracts/{contract_id}")
    path = f"/v1/ledger/entries/{contract['log_index']}"
    # strangers: no content (403 signed, 401 anonymous), like GET /v1/contracts/{id}
    err = await refused(stranger, path)
    assert (err.status, err.remote_code) == (403, "not_disclosed")
    err = await refused(stranger, path, signed=False)
    assert (err.status, err.reason) == (401, "signature_missing")
    err = await refused(stranger, f"/v1/contracts/{contract_id}")
    assert err.status == 403
    # the parties, the regulator and the operator read the record
    regulator = await api.regulator()
    payloads = set()
    for reader in (buyer, cap.provider, regulator, op):
        entry = await reader.request("GET", path)
        assert entry["record_id"] == contract_id and entry["record_type"] == "contract"
        payloads.add(entry["payload"])
    (payload,) = payloads
    # anyone: the leaf hash and its inclusion proof verify against the signed checkpoint, with no record
    keys = await stranger.request("GET", "/v1/ledger/keys", signed=False)
    ring = Keyring()
    for k in keys["keys"]:
        ring.add(k["key_id"], VerifyKey.from_base64(k["public_key"]), name=k["name"])
    async with api.http.session.get(api.base_url + "/v1/ledger/checkpoint") as resp:
        cp = verify_checkpoint(await resp.text(), ring)
    proof = await stranger.request(
        "GET", f"/v1/ledger/proofs/inclusion?index={contract['log_index']}&size={cp.size}", signed=False
    )
    verify_inclusion(_b(proof["leaf_hash"]), contract["log_index"], cp.size, [_b(h) for h in proof["hashes"]], cp.root)
    assert _b(proof["leaf_hash"]) == leaf_hash(_b(payload))  # the hash commits to exactly what the parties read


async def test_contract_events_follow_their_contract(api: Api) -> None:
    cap = await capacity(api, devices=8)
    buyer, stranger = await api.buyer("Buyer B"), await api.buyer("Buyer C")
    await submit(buyer)
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    (contract_id,) = rnd["contract_ids"]
    await buyer.request("POST", f"/v1/contracts/{contract_id}/cancel", {"reason": "plans changed"})
    entries = await api.svc.ledger.entries_for(contract_id)
    event = next(e for e in entries if e.record_type == "contract-event")
    assert record_contract_id(event.payload) == contract_id
    path = f"/v1/ledger/entries/{event.index}"
    assert (await refused(stranger, path)).status == 403
    for reader in (buyer, cap.provider):
        assert (await reader.request("GET", path))["record_type"] == "contract-event"


@pytest.mark.parametrize(("min_orders", "shown"), [(3, False), (2, True)])
async def test_public_round_prices_need_the_minimum_order_count(
    db: Any, aiohttp_client: Any, tmp_path: Path, min_orders: int, shown: bool
) -> None:
    api = await make_api(db, aiohttp_client, tmp_path, disclosure_min_orders=min_orders)
    await capacity(api, devices=8)
    b1, b2 = await api.buyer("B1"), await api.buyer("B2")
    await submit(b1, quantity_devices=4)
    await submit(b2, quantity_devices=4, limit_fen_per_device_hour={"NV-H100-SXM": 2500})
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["contracts"] == 2 and rnd["disclosure"] == "full" and rnd["prices"]
    public = await b1.request("GET", f"/v1/rounds/{rnd['id']}", signed=False)
    assert public["disclosure"] == "public" and "contract_ids" not in public
    assert (public["welfare_fen"], public["gap"], public["contracts"]) == (rnd["welfare_fen"], rnd["gap"], 2)
    assert bool(public["prices"]) is shown, public["prices"]
    market = await b1.request("GET", "/v1/market", signed=False)
    assert any(c["last_price"] for c in market["classes"]) is shown
    own = await b1.request("GET", f"/v1/rounds/{rnd['id']}")
    assert len(own["own_contract_ids"]) == 1 and own["own_contract_ids"][0] in rnd["contract_ids"]


def _who(pid: str, role: str) -> Principal:
    return Principal(pid, role, pid, "00000000", "", None, None, "active")


def test_round_audit_lines_of_losing_orders_are_only_for_their_buyer() -> None:
    view = {
        "id": "r1",
        "welfare_fen": 900,
        "contract_ids": ["c1"],
        "audit": {
            "ok": True,
            "envy_violations": 2,
            "checks": [{"name": "no_envy", "violations": 2, "detail": "losers with limit above a posted price"}],
            "envy_details": ["o-loser: limit 5100 > posted 5000.00 in group 0", "o-other: limit 5200 > posted 5000.00"],
            "uplift_fen_total": 100,
        },
    }
    prices = [{"region": "CN-SH", "family": "Hopper", "price_fen_per_device_hour": "5000", "orders": 1}]

    def seen(viewer: Principal | None, own: set[str]) -> dict[str, Any]:
        return round_disclosure(view, viewer, contracts=[("c1", "o-win")], own_orders=own, prices=prices, min_orders=3)

    anonymous = seen(None, set())
    assert "5100" not in str(anonymous) and "5200" not in str(anonymous) and "o-loser" not in str(anonymous)
    assert anonymous["audit"]["envy_violations"] == 2 and anonymous["prices"] == []
    assert anonymous["welfare_fen"] == 900 and "contract_ids" not in anonymous
    loser = seen(_who("b-loser", "buyer"), {"o-loser"})
    assert loser["own_audit_details"] == ["o-loser: limit 5100 > posted 5000.00 in group 0"]
    assert loser["own_contract_ids"] == [] and "5200" not in str(loser)
    for role in ("operator", "regulator"):
        full = seen(_who("x", role), set())
        assert full["audit"]["envy_details"] == view["audit"]["envy_details"] and full["prices"] == prices
