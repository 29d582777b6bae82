"""Connection hygiene of `hetex serve` with real sockets: slow request heads are cut (slowloris), one
address holds at most N connections, a slow body is answered 408, and ordinary requests still pass."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exchange.api.app import create_app
from exchange.cli.serve import make_runner, start_site
from exchange.composition import build_services
from exchange.settings import Settings

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _serve(db: Any, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[int, Any]]:
    settings = Settings(database_url=db.url, key_dir=tmp_path / "keys", port=0, **overrides)
    svc = await build_services(settings, sessions=db.sessions)
    await svc.identity.init(exist_ok=True)  # `hetex admin init`
    runner = make_runner(create_app(svc), settings)
    await runner.setup()
    site = await start_site(runner, settings)
    try:
        yield site.port, site.guard
    finally:
        await runner.cleanup()


@pytest.fixture
async def server(db: Any, tmp_path: Path) -> AsyncIterator[tuple[int, Any]]:
    async for got in _serve(
        db, tmp_path, http_head_timeout_seconds=0.5, http_body_timeout_seconds=0.5, http_max_connections_per_address=40
    ):
        yield got


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def _get(port: int, path: str = "/healthz") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(data.split(b" ", 2)[1]), data


async def test_slowloris_connections_are_closed(server: tuple[int, Any]) -> None:
    port, guard = server
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
    start = time.monotonic()
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def drip(writer: asyncio.StreamWriter) -> None:
        for i in range(20):  # one header line every 0.1 s: never a complete head
            if writer.is_closing():
                return
            writer.write(f"X-Slow-{i}: y\r\n".encode())
            await asyncio.sleep(0.1)

    drippers = [asyncio.create_task(drip(w)) for _, w in conns]
    status, _ = await _get(port)  # an ordinary client is served during the attack
    assert status == 200
    closed = await asyncio.gather(*(_closed_by_server(r, 3) for r, _ in conns))
    elapsed = time.monotonic() - start
    assert all(closed) and elapsed < 2.5
    assert guard.timed_out >= 30
    for task in drippers:
        task.cancel()
    for _, writer in conns:
        writer.close()


async def test_per_address_cap(db: Any, tmp_path: Path) -> None:
    async for port, guard in _serve(db, tmp_path, http_max_connections_per_address=5, http_head_timeout_seconds=30):
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        await asyncio.sleep(0.2)
        closed = await asyncio.gather(*(_closed_by_server(r, 0.5) for r, _ in conns))
        assert closed.count(True) == 3 and closed[:5] == [False] * 5
        assert guard.refused == 3 and guard.active["127.0.0.1"] == 5
        for _, writer in conns[:5]:
            writer.close()
        await asyncio.sleep(0.2)
        status, _ = await _get(port)  # the slots are free again
        assert status == 200


async def test_slow_body_is_408_problem_json(server: tuple[int, Any]) -> None:
    port, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"role":'
    )
    data = await asyncio.wait_for(reader.read(), 3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"408" and b"application/problem+json" in head
    assert json.loads(body)["code"] == "body_timeout"
    writer.close()


async def test_malformed_request_is_problem_json(server: tuple[int, Any]) -> None:
    """aiohttp answers a malformed header before any middleware: still problem+json."""
    port, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 3)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400" and b"application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["code"] == "bad_request"
    writer.close()


async def _raw(port: int, request: bytes) -> tuple[int, bytes, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head, data[:300]
    return int(head.split(b" ", 2)[1]), head, json.loads(body)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # a content coding: refused before reading (the signed digest is over the bytes as sent; no bombs)
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4\r\n\r\nabcd",
        b"POST /v1/participants HTTP/1.1\r\nHost: x\r\nContent-Encoding: br, gzip\r\nContent-Length: 2\r\n\r\n{}",
    ],
)
async def test_content_coded_body_is_400_naming_the_header(server: tuple[int, Any], request_bytes: bytes) -> None:
    port, _ = server
    status, _head, problem = await _raw(port, request_bytes)
    assert status == 400 and problem["code"] == "content_encoding_unsupported"
    assert problem["field"] == "Content-Encoding"


async def test_malformed_chunked_body_is_400_problem_json(server: tuple[int, Any]) -> None:
    port, _ = server
    status, _head, problem = await _raw(
        port,
        b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
    )
    assert status == 400 and problem["status"] == 400


async def test_malformed_requests_are_counted_lines_not_tracebacks(
    server: tuple[int, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can send junk: a counted warning per reason and minute, never an ERROR with a traceback, and
    never the request's header values (which may hold cookies) in the log."""
    port, _ = server
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        status, _head, _problem = await _raw(
            port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nCookie: session=s3cr3t\r\n\r\n"
        )
        assert status == 400
        status, _head, _problem = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: s3cr3t\x00\r\n\r\n")
        assert status == 400
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []
    lines = [r.getMessage() for r in caplog.records if r.name == "hetex.connections"]
    assert 1 <= len(lines) <= 2 and all("malformed request refused" in m for m in lines)  # one per reason
    assert not any("s3cr3t" in r.getMessage() for r in caplog.records)
