"""Helpers for contract/usage/settlement tests: a market on the test database with a settable clock."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from exchange.cli.usage import build_usage_envelope
from exchange.client import HetexClient
from federation.canonical import canonical_bytes
from federation.merkle import leaf_hash, verify_inclusion
from federation.note import NoteVerifier, verify_checkpoint
from tests.exchange.registration_support import Api, capacity, order_body

CST = timezone(timedelta(hours=8))
_idem = itertools.count()


def cst(*args: int) -> int:
    """Epoch seconds of a China Standard Time wall-clock instant."""
    return int(datetime(*args, tzinfo=CST).timestamp())


@dataclass
class FakeClock:
    """A settable clock for the contract, usage and settlement services."""

    now: int

    def __call__(self) -> int:
        return self.now


@dataclass
class Market:
    """A provider with a 16-device H100 pool, a buyer with an order, an operator, and a clock."""

    api: Api
    provider: HetexClient
    buyer: HetexClient
    operator: HetexClient
    pool_id: str
    order_id: str
    provider_id: str
    buyer_id: str
    clock: FakeClock
    contracts: list[str] = field(default_factory=list)

    async def contract(self, mode: str, *, devices: int, start: int, end: int, **kw: Any) -> dict[str, Any]:
        """A contract made the way a clearing round makes it (ContractService.create_from_match)."""
        svc = self.api.svc
        async with svc.sessions.begin() as session:
            row = await svc.contracts.create_from_match(
                session,
                order_id=self.order_id,
                pool_id=self.pool_id,
                buyer_id=self.buyer_id,
                provider_id=self.provider_id,
                devices=devices,
                start_at=start,
                end_at=end,
                buyer_price_fen=kw.pop("buyer_price_fen", 3000),
                provider_price_fen=kw.pop("provider_price_fen", 2500),
                billing_mode=mode,
                **kw,
            )
            contract_id = row.id
        self.contracts.append(contract_id)
        return dict(await self.buyer.request("GET", f"/v1/contracts/{contract_id}"))

    async def usage(self, contract_id: str, meter: str, seq: int, start: int, end: int, dm: int, **kw: Any) -> Any:
        """Send one node-signed usage report through the API."""
        env = build_usage_envelope(
            self.provider.key,
            self.provider.keyid,
            contract_id=contract_id,
            meter_id=meter,
            seq=seq,
            period_start=start,
            period_end=end,
            device_minutes=dm,
            availability_bps=kw.get("availability_bps", 10_000),
        )
        return await self.provider.request("POST", f"/v1/contracts/{contract_id}/usage", env)

    async def settle(self, as_of: int | None = None) -> dict[str, Any]:
        """POST /v1/settlements/run as the operator."""
        body = {} if as_of is None else {"as_of": as_of}
        return dict(await self.operator.request("POST", "/v1/settlements/run", body))

    async def settlements(self, contract_id: str) -> list[dict[str, Any]]:
        """GET /v1/settlements?contract_id= as the buyer."""
        data = await self.buyer.request("GET", "/v1/settlements", params={"contract_id": contract_id})
        return list(data["items"])


async def make_market(api: Api, clock_at: int) -> Market:
    """Provider capacity, a buyer order and an operator on `api`; services read `clock`."""
    cap = await capacity(api, devices=16)
    buyer = await api.buyer()
    order = await buyer.submit_order(order_body(), f"order-{next(_idem)}")
    operator = api.client()
    await api.svc.participants.add_by_operator("operator", "Exchange operator", operator.key.public.to_base64())
    clock = FakeClock(clock_at)
    svc = api.svc
    svc.contracts.clock = svc.usage.clock = svc.settlement.clock = clock
    me_p = await cap.provider.me()
    me_b = await buyer.me()
    return Market(api, cap.provider, buyer, operator, cap.pool["id"], order["id"], me_p["id"], me_b["id"], clock)


async def assert_included(market: Market, records: list[dict[str, Any]]) -> None:
    """Every record's signed envelope is provably in the latest checkpoint, checked as an outsider would."""
    client = market.buyer
    keys = await client.request("GET", "/v1/ledger/keys")
    verifiers = [NoteVerifier.from_string(k["verifier_key"]) for k in keys["keys"]]
    async with client.session.get(client.url("/v1/ledger/checkpoint")) as resp:
        assert resp.status == 200
        note = await resp.text()
    cp = verify_checkpoint(note, verifiers, origin=keys["origin"])
    for rec in records:
        entry = await client.request("GET", f"/v1/ledger/entries/{rec['log_index']}")
        stored = base64.b64decode(entry["payload"])
        assert entry["record_id"] == rec["id"]
        if "envelope" in rec:  # usage and settlement views carry the stored envelope: the same bytes
            assert canonical_bytes(rec["envelope"]) == stored
        leaf = leaf_hash(stored)
        proof = await client.request(
            "GET", "/v1/ledger/proofs/inclusion", params={"index": rec["log_index"], "size": cp.size}
        )
        assert base64.b64decode(proof["leaf_hash"]) == leaf
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        verify_inclusion(leaf, rec["log_index"], cp.size, hashes, cp.root)
