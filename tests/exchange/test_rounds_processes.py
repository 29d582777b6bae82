"""Clearing rounds in separate exchange processes on one database (PostgreSQL and SQLite):
two processes clearing a contested market at the same time never oversell a pool, and a process killed
after solving, or with its contracts written but not committed, leaves no contract and no reservation."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

from exchange.composition import build_services
from exchange.services.rounds import KILL_HOOK_ENV, peak
from exchange.settings import Settings
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.ledger import LogEntry
from exchange.storage.orders import Order
from exchange.storage.registration import Offer, Pool, Site
from exchange.storage.rounds import Round
from federation.keys import SigningKey
from identifiers.ids import new_id_str

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
POOL_DEVICES = 8


async def populate(url: str, key_dir: Path, *, pools: int = 3, orders: int = 16, seed: int = 7) -> None:
    """Providers, sites, pools and offers in CN-SH; buyers with more demand than supply; the exchange key."""
    rng = random.Random(seed)
    svc = await build_services(Settings(database_url=url, key_dir=key_dir))
    now = now_s()
    try:
        await svc.identity.init(exist_ok=True)
        provider = await svc.participants.add_by_operator("provider", "P", SigningKey.generate().public.to_base64())
        async with svc.sessions.begin() as session:
            for i in range(pools):
                site = Site(
                    id=new_id_str(),
                    cri=f"CRI1:HX:CN-SH:T:S{i}",
                    provider_id=provider.id,
                    region="CN-SH",
                    site_code=f"S{i}",
                    name=f"site {i}",
                    status="active",
                    last_heartbeat_at=now,
                )
                pool = Pool(
                    id=new_id_str(),
                    cri=f"CRI1:HX:CN-SH:T:S{i}:P{i}:NV-H100-SXM",
                    site_id=site.id,
                    model="NV-H100-SXM",
                    devices=POOL_DEVICES,
                    memory_gb=80,
                    nodes=1,
                    devices_per_node=POOL_DEVICES,
                    status="active",
                )
                offer = Offer(
                    id=new_id_str(),
                    pool_id=pool.id,
                    provider_id=provider.id,
                    devices=POOL_DEVICES,
                    window_start=now - 60,
                    min_lease_seconds=0,
                    ask_fen=1000 + 50 * i,
                    billing_modes=["per_minute"],
                    status="open",
                    version=1,
                )
                session.add_all([site])
                await session.flush()
                session.add(pool)
                await session.flush()
                session.add(offer)
        buyers = [
            await svc.participants.add_by_operator("buyer", f"B{i}", SigningKey.generate().public.to_base64(), "CN-SH")
            for i in range(4)
        ]
        async with svc.sessions.begin() as session:
            for i in range(orders):
                qty = rng.choice([1, 2, 4, 8])
                spec = {
                    "quantity_devices": qty,
                    "models": ["NV-H100-SXM"],
                    "regions": ["CN-SH"],
                    "duration_seconds": rng.choice([3600, 7200]),
                    "limit_fen_per_device_hour": {"NV-H100-SXM": rng.randint(1500, 4000)},
                    "all_or_nothing": True,
                    "same_model": False,
                    "colocation": "any",
                    "billing_mode": "per_minute",
                }
                session.add(
                    Order(
                        id=new_id_str(),
                        buyer_id=buyers[i % len(buyers)].id,
                        idempotency_key=f"k{i}",
                        request_hash=f"{i:064d}",
                        spec=spec,
                        billing_mode="per_minute",
                        status="open",
                        quantity_devices=qty,
                        filled_devices=0,
                        created_at=now - orders + i,
                        updated_at=now,
                    )
                )
    finally:
        await svc.close()


def round_process(url: str, key_dir: Path, **env: str) -> subprocess.Popen[str]:
    """`python -m exchange round run` as its own process."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "HETEX_KEY_DIR": str(key_dir), **env}
    full.pop(KILL_HOOK_ENV, None) if KILL_HOOK_ENV not in env else None
    return subprocess.Popen(
        [sys.executable, "-m", "exchange", "round", "run", "--json", "--database-url", url],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def finish(proc: subprocess.Popen[str], limit: float = 120) -> tuple[int, str, str]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=limit)
    return proc.returncode, out, err


async def state(url: str) -> dict[str, Any]:
    """Contracts, pools, orders, rounds and log size of the database."""
    engine = make_engine(url, poolclass=NullPool) if "postgresql" in url else make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as s:
            return {
                "contracts": list((await s.execute(select(Contract))).scalars()),
                "pools": {p.id: p.devices for p in (await s.execute(select(Pool))).scalars()},
                "orders": list((await s.execute(select(Order))).scalars()),
                "rounds": list((await s.execute(select(Round).order_by(Round.started_at))).scalars()),
                "log_size": (await s.execute(select(func.count()).select_from(LogEntry))).scalar_one(),
            }
    finally:
        await engine.dispose()


def assert_never_oversold(st: dict[str, Any]) -> None:
    """At every time slot the devices reserved on a pool stay within its capacity; fills add up."""
    by_pool: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    by_order: dict[str, int] = defaultdict(int)
    for c in st["contracts"]:
        by_pool[c.pool_id].append((c.start_at, c.end_at, c.devices))
        by_order[c.order_id] += c.devices
    for pool_id, ivs in by_pool.items():
        for s, e, _d in ivs:
            assert peak(ivs, s, e) <= st["pools"][pool_id], f"pool {pool_id} oversold"
    for o in st["orders"]:
        assert o.filled_devices == by_order.get(o.id, 0) <= (o.quantity_devices or 0)


async def test_two_processes_clearing_at_once_never_oversell(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    keys = tmp_path / "keys"
    await populate(url, keys)
    procs = [round_process(url, keys) for _ in range(2)]
    results = await asyncio.gather(*(finish(p) for p in procs))
    for code, _out, err in results:
        assert code == 0, err[-2000:]
    st = await state(url)
    assert [r.status for r in st["rounds"]] == ["completed", "completed"]
    assert len(st["contracts"]) > 0 and st["log_size"] == len(st["contracts"])
    reserved = sum(c.devices for c in st["contracts"])
    assert reserved <= POOL_DEVICES * 3
    assert_never_oversold(st)


async def test_killed_rounds_leave_nothing_and_the_next_round_clears(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    keys = tmp_path / "keys"
    await populate(url, keys)
    for n, point in enumerate(["after_solve", "before_commit"]):
        code, _out, err = await finish(round_process(url, keys, **{KILL_HOOK_ENV: point}))
        assert code == 9, err[-2000:]
        st = await state(url)
        assert st["contracts"] == [] and st["log_size"] == 0, point
        assert all(o.status == "open" and o.filled_devices == 0 for o in st["orders"])
        assert [r.status for r in st["rounds"]] == ["abandoned"] * n + ["running"]
    code, _out, err = await finish(round_process(url, keys))
    assert code == 0, err[-2000:]
    st = await state(url)
    assert [r.status for r in st["rounds"]] == ["abandoned", "abandoned", "completed"]
    assert len(st["contracts"]) > 0 and st["log_size"] == len(st["contracts"])
    assert_never_oversold(st)
