"""Federation test kit: seed providers, pools, offers and buyer orders straight into an exchange database
(until the registration/order APIs land), and run several exchanges in one process on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from exchange.api.app import create_app
from exchange.composition import Services, build_services
from exchange.services.identity import ExchangeKeyInfo
from exchange.settings import Settings
from exchange.storage.contracts import Contract
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.identity import ExchangeKey
from exchange.storage.migrate import upgrade_engine
from exchange.storage.orders import Order
from exchange.storage.participants import Participant
from exchange.storage.registration import Offer, Pool, Site
from identifiers.cri import mint_pool_cri, mint_site_cri
from identifiers.ids import new_id_str

FAST = {
    "federation_summary_interval_seconds": 0,
    "federation_sync_interval_seconds": 0,
    "federation_forward_interval_seconds": 0,
    "federation_sweep_interval_seconds": 0,
    "federation_peer_timeout_seconds": 2,
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _participant(session: Session, role: str, name: str) -> str:
    pid = new_id_str()
    session.add(
        Participant(
            id=pid,
            role=role,
            name=name,
            public_key=secrets.token_urlsafe(32)[:43] + "=",
            key_id=secrets.token_hex(4),
            status="active",
            created_at=int(time.time()),
        )
    )
    return pid


@dataclass(frozen=True)
class SeededPool:
    """What seed_pool created."""

    provider_id: str
    pool_id: str
    pool_cri: str
    offer_id: str


def seed_pool(
    session: Session,
    authority: str,
    *,
    region: str,
    model: str,
    devices: int,
    ask_fen: int,
    operator: str = "PR1",
    memory_gb: int = 80,
) -> SeededPool:
    """A provider with one live site (fresh heartbeat), one pool and one open offer of all its devices."""
    now = int(time.time())
    provider = _participant(session, "provider", f"provider {operator}")
    site_cri = mint_site_cri(authority, region, operator)
    site = Site(
        id=new_id_str(),
        cri=str(site_cri),
        provider_id=provider,
        region=region,
        site_code=site_cri.site or "",
        name=f"site {site_cri.site}",
        status="active",
        last_heartbeat_at=now + 3600,
        created_at=now,
    )
    session.flush()
    session.add(site)
    session.flush()
    pool_cri = mint_pool_cri(site_cri, model)
    pool = Pool(
        id=new_id_str(),
        cri=str(pool_cri),
        site_id=site.id,
        model=model,
        devices=devices,
        memory_gb=memory_gb,
        nodes=max(1, devices // 8),
        devices_per_node=min(8, devices),
        status="active",
        created_at=now,
    )
    session.add(pool)
    session.flush()
    offer = Offer(
        id=new_id_str(),
        pool_id=pool.id,
        provider_id=provider,
        devices=devices,
        window_start=now - 60,
        window_end=None,
        min_lease_seconds=60,
        ask_fen=ask_fen,
        billing_modes=["per_minute"],
        status="open",
        created_at=now,
    )
    session.add(offer)
    session.flush()
    return SeededPool(provider, pool.id, str(pool_cri), offer.id)


def seed_buyer(session: Session, name: str = "buyer") -> str:
    """A buyer participant; its id."""
    pid = _participant(session, "buyer", name)
    session.flush()
    return pid


def seed_order(
    session: Session,
    buyer_id: str,
    *,
    devices: int,
    models: Sequence[str],
    limit_fen: int,
    regions: Sequence[str] | None = None,
    duration: int = 3600,
    all_or_nothing: bool = True,
    **extra: Any,
) -> str:
    """An open device order (the spec keys follow DESIGN.md section 6; `extra` adds more); its id."""
    spec: dict[str, Any] = {
        "quantity_devices": devices,
        "models": list(models),
        "duration_seconds": duration,
        "limit_fen_per_device_hour": {"*": limit_fen},
        "billing_mode": "per_minute",
        "all_or_nothing": all_or_nothing,
    }
    if regions is not None:
        spec["regions"] = list(regions)
    spec.update(extra)
    oid = new_id_str()
    session.add(
        Order(
            id=oid,
            buyer_id=buyer_id,
            idempotency_key=oid,
            request_hash="0" * 64,
            spec=spec,
            billing_mode="per_minute",
            status="open",
            quantity_devices=devices,
            filled_devices=0,
            created_at=int(time.time()),
        )
    )
    session.flush()
    return oid


def seed_scu_order(
    session: Session, buyer_id: str, *, scu: str, models: Sequence[str], limit_fen_per_scu_hour: int
) -> str:
    """An open SCU order (quantity in SCU, limit per SCU-hour), as the order API stores it; its id."""
    spec: dict[str, Any] = {
        "quantity_scu": scu,
        "models": list(models),
        "duration_seconds": 3600,
        "limit_fen_per_scu_hour": limit_fen_per_scu_hour,
        "billing_mode": "per_minute",
        "all_or_nothing": True,
    }
    oid = new_id_str()
    session.add(
        Order(
            id=oid, buyer_id=buyer_id, idempotency_key=oid, request_hash="0" * 64, spec=spec,
            billing_mode="per_minute", status="open", quantity_devices=None, filled_devices=0,
            created_at=int(time.time()),
        )
    )  # fmt: skip
    session.flush()
    return oid


def scu_fill(url: str, order_id: str) -> tuple[str, str | None, int]:
    """Status, filled SCU (decimal text) and filled devices of an order."""
    with db_session(url) as s:
        o = s.get(Order, order_id)
        assert o is not None
        return o.status, o.filled_scu, o.filled_devices


def sync_url(async_url: str) -> str:
    """The plain (sync) SQLAlchemy URL of an aiosqlite URL."""
    return async_url.replace("sqlite+aiosqlite:", "sqlite:")


_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def db_session(url: str) -> Any:
    """A sync session on an exchange's SQLite file (committed on exit); works while the server runs."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = create_engine(sync_url(url), connect_args={"timeout": 30}, poolclass=NullPool)
    with Session(engine) as session, session.begin():
        yield session


def order_row(url: str, order_id: str) -> dict[str, Any]:
    """Status and filled devices of an order."""
    with db_session(url) as s:
        o = s.get(Order, order_id)
        assert o is not None
        return {"status": o.status, "filled_devices": o.filled_devices, "quantity_devices": o.quantity_devices}


def contracts_on_pool(url: str, pool_id: str) -> list[Contract]:
    """Every non-cancelled contract reserving the pool."""
    with db_session(url) as s:
        rows = s.scalars(select(Contract).where(Contract.pool_id == pool_id, Contract.status != "cancelled")).all()
        s.expunge_all()
        return list(rows)


# ------------------------------------------------------------------------------------------ in-process


@dataclass
class Exchange:
    """One exchange running in this process on a loopback port."""

    authority: str
    url: str
    db_url: str
    svc: Services
    server: TestServer

    @property
    def fed(self) -> Any:
        """Its federation roles (exchange.services.federation.Federation)."""
        return self.svc.federation

    def seed(self) -> Any:
        """A sync DB session context for seeding."""
        return db_session(self.db_url)


async def start_exchange(
    tmp_path: Path,
    authority: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    reuse_key: ExchangeKeyInfo | None = None,
    **settings: Any,
) -> Exchange:
    """Migrate (or reopen) the SQLite file of `authority` and serve it on a loopback port (free one if None);
    the key directory is the same on every start, so a restarted exchange keeps its identity. `reuse_key`
    puts an existing key's row into a new database (an exchange that rebuilds its history with its old key)."""
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    db_url = f"sqlite+aiosqlite:///{tmp_path / f'{authority.lower()}.db'}"
    engine = make_engine(db_url)
    await upgrade_engine(engine)
    if reuse_key is not None:
        async with make_sessionmaker(engine).begin() as s:
            s.add(ExchangeKey(**dataclasses.asdict(reuse_key), created_at=reuse_key.not_before))
    await engine.dispose()
    values = {**FAST, **settings}
    cfg = Settings(
        database_url=db_url,
        key_dir=tmp_path / f"keys-{authority.lower()}",
        exports_dir=tmp_path / f"exports-{authority.lower()}",
        authority=authority,
        origin=f"{authority.lower()}.hetex.test/log",
        public_base_url=url,
        host=host,
        port=port,
        **values,
    )
    svc = await build_services(cfg)
    await svc.identity.init(exist_ok=True)  # first start creates the key (as `hetex serve` would), later ones load it
    app = create_app(svc)
    server = TestServer(app, host=host, port=port)
    await server.start_server()
    return Exchange(authority, url, db_url, svc, server)


async def stop_exchange(ex: Exchange) -> None:
    """Stop serving and release the database (route tasks a hub's routes started are cancelled first: one
    still running would hold a connection past the engine's disposal, and its thread keeps pytest alive)."""
    await ex.server.close()
    await ex.svc.hub.close()
    await ex.fed.close()
    await ex.svc.close()


async def peer_all(exchanges: Sequence[Exchange]) -> None:
    """Every exchange adds every other as a peer (verifier key string, so the origin travels with it)."""
    for a in exchanges:
        for b in exchanges:
            if a is not b:
                ident = b.fed.ctx.identity_view()
                await a.fed.peers.add_peer(b.url, ident["verifier_key"], b.authority)


@contextlib.asynccontextmanager
async def federation(tmp_path: Path, authorities: Sequence[str], **settings: Any) -> AsyncIterator[list[Exchange]]:
    """Start and peer several in-process exchanges; stop them afterwards."""
    exchanges = [await start_exchange(tmp_path, a, **settings) for a in authorities]
    try:
        await peer_all(exchanges)
        yield exchanges
    finally:
        for ex in exchanges:
            with contextlib.suppress(Exception):
                await stop_exchange(ex)


@contextlib.asynccontextmanager
async def hub_fabric(
    tmp_path: Path, authorities: Sequence[str], **member_settings: Any
) -> AsyncIterator[tuple[Exchange, list[Exchange]]]:
    """A hub H (hub rounds run by the test) and members naming it, all in process and peered; stopped after."""
    h = await start_exchange(tmp_path, "H", federation_hub_mode=True, federation_hub_round_interval_seconds=0)
    members = [await start_exchange(tmp_path, a, federation_hub="H", **member_settings) for a in authorities]
    try:
        await peer_all([h, *members])
        yield h, members
    finally:
        for ex in (h, *members):
            await stop_exchange(ex)


async def publish_all(exchanges: Sequence[Exchange]) -> None:
    """Every exchange publishes its summary to its peers."""
    await asyncio.gather(*(ex.fed.summaries.publish_summary() for ex in exchanges))
