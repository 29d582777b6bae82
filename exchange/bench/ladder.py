"""`hetex bench api --ladder`: the cost of a signed order, rung by rung, in one run.

Four rungs, measured one after the other by the same client (one aiohttp session, the same signed request:
a fresh nonce, Content-Digest and Ed25519 signature, a new Idempotency-Key, the same order body) at the
same concurrency:

1. a bare aiohttp handler that reads and parses the JSON body;
2. + RFC 9421 parse and Ed25519 verify (hetex's own federation.httpsig, the key held in memory);
3. + one raw INSERT of the request (key id, nonce, body) through the database driver hetex uses
   (aiosqlite on SQLite, asyncpg on PostgreSQL), no ORM: the floor for a durable signed write;
4. hetex's full signed order (POST /v1/orders through every middleware, service and the database).

Rungs 1-3 are served by one small process (`python -m exchange.bench.ladder`), rung 4 by the real app in
another; both on loopback ports, without access logs, on the same database. `ladder_ratio` is rung 4 /
rung 3 throughput: how close the full order comes to its unavoidable work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from exchange.bench.api import ORDER, Rate, _bench_app, _free_port, _measured, _wait_ready, measure
from exchange.client import HetexClient
from federation.errors import SignatureError
from federation.httpsig import parse_request_signature, verify_parsed
from federation.keys import SigningKey, VerifyKey

RUNGS = ("bare_handler", "verify_signature", "raw_insert", "signed_order")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
_CREATE = (
    "CREATE TABLE IF NOT EXISTS bench_ladder (id TEXT PRIMARY KEY, keyid TEXT NOT NULL, "
    "nonce TEXT NOT NULL UNIQUE, created BIGINT NOT NULL, body TEXT NOT NULL)"
)


# ------------------------------------------------------------------------------------------- server


class _Store:
    """The raw driver connection of rung 3: one aiosqlite connection (as hetex's SQLite pool of one) or an
    asyncpg pool (as hetex's PostgreSQL pool)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite: Any = None
        self.pg: Any = None

    async def open(self) -> None:
        if self.url.startswith("sqlite"):
            import aiosqlite

            self.sqlite = await aiosqlite.connect(self.url.split(":///", 1)[1], isolation_level=None)
            for pragma in ("journal_mode=WAL", "busy_timeout=30000", "synchronous=NORMAL"):
                await self.sqlite.execute(f"PRAGMA {pragma}")
            await self.sqlite.execute(_CREATE)
        else:
            import asyncpg

            dsn = self.url.replace("postgresql+asyncpg://", "postgresql://")
            self.pg = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
            await self.pg.execute(_CREATE)

    async def insert(self, keyid: str, nonce: str, created: int, body: str) -> None:
        row_id = str(uuid.uuid4())
        if self.sqlite is not None:
            await self.sqlite.execute(
                "INSERT INTO bench_ladder VALUES (?, ?, ?, ?, ?)", (row_id, keyid, nonce, created, body)
            )
        else:
            await self.pg.execute(
                "INSERT INTO bench_ladder VALUES ($1, $2, $3, $4, $5)", row_id, keyid, nonce, created, body
            )

    async def close(self) -> None:
        if self.sqlite is not None:
            await self.sqlite.close()
        if self.pg is not None:
            await self.pg.close()


def ladder_app(base_url: str, store: _Store) -> web.Application:
    """Rungs 1-3 as aiohttp handlers; POST /key tells the server the client's public key first. Signatures
    are checked against `base_url` + path (the request's own Host when `base_url` is empty)."""
    keys: dict[str, VerifyKey] = {}

    async def set_key(request: web.Request) -> web.Response:
        data = await request.json()
        key = VerifyKey.from_base64(data["public_key"])
        keys[data["keyid"]] = key
        return web.json_response({"ok": True})

    def verified(request: web.Request, body: bytes) -> tuple[str, str, int]:
        url = (base_url or f"{request.scheme}://{request.host}") + request.raw_path
        parsed = parse_request_signature(request.method, url, list(request.headers.items()))
        checked = verify_parsed(parsed, body, keys.get(parsed.keyid))
        return checked.keyid, checked.nonce, checked.created

    async def rung1(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        return web.json_response({"id": str(uuid.uuid4()), "keys": len(data)}, status=201)

    async def rung2(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verified(request, body)
        except SignatureError as exc:
            return web.json_response({"reason": exc.reason}, status=401)
        data = json.loads(body)
        return web.json_response({"id": str(uuid.uuid4()), "keys": len(data)}, status=201)

    async def rung3(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            keyid, nonce, created = verified(request, body)
        except SignatureError as exc:
            return web.json_response({"reason": exc.reason}, status=401)
        data = json.loads(body)
        await store.insert(keyid, nonce, created, json.dumps(data, separators=(",", ":"), sort_keys=True))
        return web.json_response({"id": str(uuid.uuid4()), "keys": len(data)}, status=201)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def on_startup(_app: web.Application) -> None:
        await store.open()

    async def on_cleanup(_app: web.Application) -> None:
        await store.close()

    app = web.Application()
    app.router.add_post("/key", set_key)
    app.router.add_post("/ladder/1", rung1)
    app.router.add_post("/ladder/2", rung2)
    app.router.add_post("/ladder/3", rung3)
    app.router.add_get("/healthz", health)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


# ------------------------------------------------------------------------------------------- client


@contextlib.contextmanager
def _process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.getcwd())
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()


@contextlib.asynccontextmanager
async def bench_database(db: str, tmp: Path, pg_url: str) -> AsyncIterator[str]:
    """A fresh database for one bench run: a SQLite file in `tmp`, or a PostgreSQL database made on the
    server `pg_url` (dropped after)."""
    if db == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        return
    import asyncpg

    admin = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"hetex_bench_{os.urandom(4).hex()}"

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    await sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rpartition('/')[0]}/{name}".replace("postgresql://", "postgresql+asyncpg://")
    finally:
        await sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _bench_rung(base: str, rung: int, seconds: float, concurrency: int) -> Rate:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = HetexClient(base, SigningKey.generate(), session=session)
        await client.request(
            "POST", "/key", {"keyid": client.keyid, "public_key": client.key.public.to_base64()}, signed=False
        )
        run = os.urandom(4).hex()

        async def send(i: int) -> bool:
            result = await client.request("POST", f"/ladder/{rung}", ORDER, headers={"Idempotency-Key": f"l{run}-{i}"})
            return bool(result.get("id"))

        return await measure(seconds, concurrency, send)


async def run_ladder(seconds: float, concurrency: int, db: str = "sqlite", pg_url: str = DEFAULT_PG) -> dict[str, Any]:
    """Start the ladder and app servers on one fresh database, measure rungs 1-4; return the figures."""
    with tempfile.TemporaryDirectory(prefix="hetex-ladder-") as tmp:
        async with bench_database(db, Path(tmp), pg_url) as url:
            ladder_port, app_port = _free_port(), _free_port()
            ladder_cmd = ["-m", "exchange.bench.ladder", "--port", str(ladder_port), "--database-url", url]
            app_cmd = ["-m", "exchange.bench.api", "--serve", "app", "--port", str(app_port), "--database-url", url]
            with _process(app_cmd) as app_proc:
                app_base = f"http://127.0.0.1:{app_port}"
                await _wait_ready(app_base + "/healthz", app_proc)  # migrated before the ladder adds its table
                with _process(ladder_cmd) as ladder_proc:
                    ladder_base = f"http://127.0.0.1:{ladder_port}"
                    await _wait_ready(ladder_base + "/healthz", ladder_proc)
                    rates = [
                        await _measured(ladder_proc.pid, _bench_rung(ladder_base, rung, seconds, concurrency))
                        for rung in (1, 2, 3)
                    ]
                rates.append(await _measured(app_proc.pid, _bench_app(app_base, seconds, concurrency)))
    per_second = [r.per_second for r in rates]
    return {
        "benchmark": "api-ladder",
        "seconds": seconds,
        "concurrency": concurrency,
        "database": db,
        "rungs": {name: asdict(rate) for name, rate in zip(RUNGS, rates, strict=True)},
        "step_ratios": {
            f"{RUNGS[i + 1]}/{RUNGS[i]}": round(per_second[i + 1] / per_second[i], 3) if per_second[i] else None
            for i in range(3)
        },
        "ladder_ratio": round(per_second[3] / per_second[2], 3) if per_second[2] else None,
        # the same comparison in server CPU per request (rung 3 / rung 4): unlike throughput, it does not
        # saturate at the client's signing rate on a small machine
        "ladder_cpu_ratio": _cpu_ratio(rates[2], rates[3]),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_ratio(floor: Rate, full: Rate) -> float | None:
    if not floor.server_cpu_ms_per_request or not full.server_cpu_ms_per_request:
        return None
    return round(floor.server_cpu_ms_per_request / full.server_cpu_ms_per_request, 3)


def format_ladder(result: dict[str, Any]) -> str:
    """Human summary of run_ladder's figures."""
    lines = [
        f"bench api --ladder: {result['seconds']} s per rung, concurrency {result['concurrency']}, "
        f"{result['cpu_count']} CPUs, load {result['load_average']}, {result['database']}"
    ]
    for i, name in enumerate(RUNGS, 1):
        r = result["rungs"][name]
        lines.append(
            f"  {i} {name:<17}: {r['per_second']:>8} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
            f"  server CPU {r['server_cpu_ms_per_request']} ms/req  ({r['errors']} errors)"
        )
    lines.append(f"  ladder_ratio (4/3)  : {result['ladder_ratio']}  (server CPU 3/4: {result['ladder_cpu_ratio']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Internal entry: serve rungs 1-3 (used by run_ladder in a child process)."""
    parser = argparse.ArgumentParser(prog="python -m exchange.bench.ladder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{args.port}"
    web.run_app(
        ladder_app(base, _Store(args.database_url)), host="127.0.0.1", port=args.port, access_log=None, print=None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
