"""`hetex bench api --ladder`: rungs 2 and 3 really verify and store; the CLI reports all four rungs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exchange.bench.ladder import RUNGS, _Store, ladder_app
from exchange.cli.main import main
from exchange.client import HetexClient, RemoteError
from federation.keys import SigningKey


def test_rungs_verify_the_signature_and_insert_the_row(tmp_path: Path) -> None:
    db = tmp_path / "ladder.db"

    async def scenario() -> None:
        server = TestServer(ladder_app("", _Store(f"sqlite+aiosqlite:///{db}")), host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        try:
            async with aiohttp.ClientSession() as session:
                client = HetexClient(base, SigningKey.generate(), session=session)
                stranger = HetexClient(base, SigningKey.generate(), session=session)
                pub = {"keyid": client.keyid, "public_key": client.key.public.to_base64()}
                await client.request("POST", "/key", pub, signed=False)
                assert (await stranger.request("POST", "/ladder/1", {"a": 1}))["keys"] == 1  # rung 1 checks nothing
                with pytest.raises(RemoteError):
                    await stranger.request("POST", "/ladder/2", {"a": 1})  # unknown key
                with pytest.raises(RemoteError):
                    await client.request("POST", "/ladder/3", {"a": 1}, signed=False)
                assert (await client.request("POST", "/ladder/2", {"a": 1}))["keys"] == 1
                await client.request("POST", "/ladder/3", {"a": 1, "b": 2})
        finally:
            await server.close()

    asyncio.run(scenario())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT body FROM bench_ladder").fetchall()
    assert [json.loads(r[0]) for r in rows] == [{"a": 1, "b": 2}]


@pytest.mark.slow
def test_bench_api_ladder_reports_four_rungs(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "api", "--ladder", "--seconds", "0.4", "--concurrency", "4", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert list(data["rungs"]) == list(RUNGS)
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in data["rungs"].values())
    rungs = data["rungs"]
    assert data["ladder_ratio"] == round(rungs["signed_order"]["per_second"] / rungs["raw_insert"]["per_second"], 3)
