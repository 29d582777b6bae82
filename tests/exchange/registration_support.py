"""Shared test plumbing for the participant/registration/order API tests: app on the `db` fixture,
signed clients, a provider with capacity, a buyer, and row counts for "nothing changed" checks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.api.app import create_app
from exchange.client import HetexClient
from exchange.composition import Services, build_services
from exchange.settings import Settings
from exchange.storage.orders import Order
from exchange.storage.participants import Participant, RegistrationRecord, SeenNonce
from exchange.storage.registration import Offer, Pool, Site
from federation.keys import SigningKey
from tests.exchange.appfactory import serve

TABLES = {
    "participants": Participant,
    "registration_records": RegistrationRecord,
    "seen_nonces": SeenNonce,
    "sites": Site,
    "pools": Pool,
    "offers": Offer,
    "orders": Order,
}


@dataclass
class Api:
    """A running app on the test database plus helpers to make signed clients."""

    svc: Services
    base_url: str
    http: Any  # aiohttp TestClient

    def client(self, key: SigningKey | None = None) -> HetexClient:
        """A signed client for `key` (a fresh key when None) sharing the test session."""
        return HetexClient(self.base_url, key or SigningKey.generate(), session=self.http.session)

    async def counts(self) -> dict[str, int]:
        """Row count of every table this API writes."""
        out = {}
        async with self.svc.sessions() as session:
            for name, table in TABLES.items():
                out[name] = (await session.execute(select(func.count()).select_from(table))).scalar_one()
        return out

    async def provider(self, name: str = "Provider A") -> HetexClient:
        """A registered provider's client."""
        c = self.client()
        await c.register("provider", name)
        return c

    async def buyer(self, name: str = "Buyer B", home_region: str | None = "CN-SH") -> HetexClient:
        """A registered buyer's client."""
        c = self.client()
        await c.register("buyer", name, home_region)
        return c

    async def regulator(self, name: str = "Regulator R") -> HetexClient:
        """A regulator added by the operator."""
        c = self.client()
        await self.svc.participants.add_by_operator("regulator", name, c.key.public.to_base64())
        return c


async def make_api(db: Any, aiohttp_client: Any, tmp_path: Path, **settings: Any) -> Api:
    """Build services on the test database and start the app on a loopback test server."""
    svc = await build_services(
        Settings(database_url=db.url, key_dir=tmp_path / "keys", **settings), sessions=db.sessions
    )
    await svc.identity.init(exist_ok=True)  # `hetex admin init`: keys are created only explicitly
    http = await serve(aiohttp_client, svc)
    return Api(svc=svc, base_url=str(http.make_url("")).rstrip("/"), http=http)


@pytest.fixture
async def api(db: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Api]:
    """The app on the per-test rolled-back database."""
    yield await make_api(db, aiohttp_client, tmp_path)


@dataclass
class Capacity:
    """A provider with one site, one pool and one open offer."""

    provider: HetexClient
    site: dict[str, Any]
    pool: dict[str, Any]
    offer: dict[str, Any]


async def capacity(
    api: Api,
    *,
    region: str = "CN-SH",
    model: str = "NV-H100-SXM",
    devices: int = 16,
    ask_fen: int = 2000,
    provider: HetexClient | None = None,
) -> Capacity:
    """Register a provider (unless given), a site, a pool and an offer of all its devices."""
    p = provider or await api.provider()
    site = await p.add_site(region, "Node 1", pue="1.25", green_share="0.4", interconnect="RoCE 400G")
    pool = await p.add_pool(site["cri"], model, devices, nodes=devices // 8 or 1, devices_per_node=min(8, devices))
    offer = await p.post_offer(
        pool["cri"], devices, ask_fen, int(time.time()) - 60, billing_modes=["per_minute", "subscription"]
    )
    return Capacity(p, site, pool, offer)


def order_body(**overrides: Any) -> dict[str, Any]:
    """A valid order body (8 H100 devices for 2 hours in CN-SH at 3000 fen/device-hour)."""
    body: dict[str, Any] = {
        "quantity_devices": 8,
        "models": ["NV-H100-SXM"],
        "regions": ["CN-SH"],
        "duration_seconds": 7200,
        "limit_fen_per_device_hour": {"NV-H100-SXM": 3000},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


class LiveServer:
    """The real app on a loopback port in a background thread with its own event loop."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.base = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from aiohttp import web

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        svc = await build_services(Settings(database_url=self.url, key_dir=self.tmp / "keys"))
        await svc.identity.init(exist_ok=True)
        runner = web.AppRunner(create_app(svc))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        svc.settings.public_base_url = self.base
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await svc.close()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
