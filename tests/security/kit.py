"""Plumbing of the hostile-input suite: a market with one of every resource, raw (signed or not) requests,
and row counts of every table, so "refused and nothing written" is checked the same way everywhere."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from yarl import URL

from exchange.client import HetexClient
from exchange.storage.base import Base
from tests.exchange.registration_support import Api, order_body
from tests.exchange.settlement_support import Market, cst

HOUR = 3600
T0 = cst(2026, 3, 2, 9)


@dataclass
class Answer:
    """Status, content type and parsed body of one raw request."""

    status: int
    content_type: str
    body: Any

    @property
    def is_problem(self) -> bool:
        """A 4xx answered as problem+json with a stable code."""
        return (
            400 <= self.status < 500
            and self.content_type == "application/problem+json"
            and isinstance(self.body, dict)
            and isinstance(self.body.get("code"), str)
            and self.body.get("status") == self.status
        )


@dataclass
class World:
    """A market with a provider (site, pools, offer), a buyer (orders), contracts, an operator and a regulator,
    so every write route has a real resource to aim at."""

    market: Market
    regulator: HetexClient
    newcomer: HetexClient  # a key not registered yet
    site_cri: str
    pool_cri: str
    spare_pool_cri: str  # a pool with nothing offered yet
    offer_id: str
    contract_id: str  # confirmed
    unconfirmed_id: str
    open_order_id: str  # an open order nothing fills
    regulator_id: str  # a participant the operator may suspend or reinstate

    @property
    def api(self) -> Api:
        """The app under test."""
        return self.market.api

    def client_for(self, path: str) -> HetexClient:
        """The participant who may call `path` (the owner of what it names)."""
        m = self.market
        if path.startswith(("/v1/sites", "/v1/pools", "/v1/offers")) or path.endswith(("/confirm", "/usage")):
            return m.provider
        if path.startswith(("/v1/settlements", "/v1/rounds", "/v1/participants/")) and path != "/v1/participants/me":
            return m.operator
        if path.startswith("/v1/audit"):
            return self.regulator
        return m.buyer


async def make_world(market: Market) -> World:
    """Add to `market` a confirmed and an unconfirmed contract, a spare pool, an open order and a regulator;
    the contract services' clock is one hour into the confirmed contract (usage for it is due)."""
    m = market
    contract = await m.contract("per_minute", devices=2, start=T0, end=T0 + 4 * HOUR)
    await m.provider.request("POST", f"/v1/contracts/{contract['id']}/confirm")
    unconfirmed = await m.contract("per_minute", devices=2, start=T0, end=T0 + 4 * HOUR)
    m.clock.now = T0 + HOUR
    regulator = await m.api.regulator()
    offer = (await m.provider.request("GET", "/v1/offers"))["offers"][0]
    spare = await m.provider.add_pool(offer["site_cri"], "NV-H100-SXM", 8, nodes=1, devices_per_node=8)
    order = await m.buyer.submit_order(order_body(limit_fen_per_device_hour={"NV-H100-SXM": 1}), "world-open")
    return World(
        m,
        regulator,
        m.api.client(),
        offer["site_cri"],
        offer["pool_cri"],
        spare["cri"],
        offer["id"],
        contract["id"],
        unconfirmed["id"],
        order["id"],
        (await regulator.me())["id"],
    )


async def row_counts(api: Api) -> dict[str, int]:
    """Row count of every table of the schema (one query)."""
    tables = Base.metadata.sorted_tables
    query = select(*(select(func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables))
    async with api.svc.sessions() as session:
        row = (await session.execute(query)).one()
    return dict(zip((t.name for t in tables), row, strict=True))


async def send(
    api: Api,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    client: HetexClient | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Send exact bytes (signed by `client` when given) and read the answer whatever it is."""
    url = api.base_url + path
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if client is not None:
        all_headers.update(client.sign(method, url, body))
    async with api.http.session.request(method, URL(url, encoded=True), data=body, headers=all_headers) as resp:
        text = await resp.text()
        try:
            data: Any = json.loads(text) if text else None
        except ValueError:
            data = text
        return Answer(resp.status, resp.content_type, data)
