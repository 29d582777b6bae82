"""Ledger HTTP API on SQLite and PostgreSQL: checkpoint note, entries, proofs verified offline, keys, 422s."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from exchange.api.app import create_app
from exchange.client import HetexClient, RemoteError
from federation.keys import Keyring, SigningKey, VerifyKey
from federation.merkle import leaf_hash, verify_consistency, verify_inclusion
from federation.note import NoteVerifier, verify_checkpoint
from tests.exchange.appfactory import make_services, serve

ORIGIN = "api.hetex.test/log"


def _b(text: str) -> bytes:
    return base64.b64decode(text)


async def _client(aiohttp_client: Any, db: Any, tmp_path: Path) -> tuple[Any, Any]:
    svc = await make_services(db, tmp_path, origin=ORIGIN, checkpoint_interval_seconds=0)
    return svc, await serve(aiohttp_client, svc)


async def _append(svc: Any, db: Any, start: int, n: int) -> None:
    async with db.sessions.begin() as session:
        await svc.ledger.append_many(
            session, [("settlement", f"s-{i}", {"id": f"s-{i}", "fen": 100 * i}) for i in range(start, start + n)]
        )


async def test_checkpoint_entries_and_proofs_verify_offline(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    svc, client = await _client(aiohttp_client, db, tmp_path)
    resp = await client.get("/v1/ledger/keys")
    keys = (await resp.json())["keys"]
    ring = Keyring()
    for k in keys:
        ring.add(k["key_id"], VerifyKey.from_base64(k["public_key"]), name=k["name"])
        assert NoteVerifier.from_string(k["verifier_key"]).key_id.hex() == k["key_id"]

    await _append(svc, db, 0, 5)
    resp = await client.get("/v1/ledger/checkpoint")
    assert resp.status == 200 and resp.content_type == "text/plain"
    old_note = await resp.text()
    old = verify_checkpoint(old_note, ring, origin=ORIGIN)
    assert old.size == 5 and resp.headers["X-Hetex-Tree-Size"] == "5"

    await _append(svc, db, 5, 8)
    new = verify_checkpoint(await (await client.get("/v1/ledger/checkpoint")).text(), ring, origin=ORIGIN)
    assert new.size == 13

    op = HetexClient(str(client.make_url("")).rstrip("/"), SigningKey.generate(), session=client.session)
    await svc.participants.add_by_operator("operator", "ops", op.key.public.to_base64())
    for index in (0, 4, 12):
        # anyone: the leaf hash and its proof verify against the signed checkpoint
        proof = await (await client.get(f"/v1/ledger/proofs/inclusion?index={index}&size={new.size}")).json()
        verify_inclusion(_b(proof["leaf_hash"]), index, new.size, [_b(h) for h in proof["hashes"]], new.root)
        # the record itself: a signed read by the operator (or a party, or the regulator)
        entry = await op.request("GET", f"/v1/ledger/entries/{index}")
        assert _b(entry["leaf_hash"]) == leaf_hash(_b(entry["payload"])) == _b(proof["leaf_hash"])
        assert entry["record_id"] == f"s-{index}"
        assert entry["envelope"]["payloadType"] == "application/vnd.hetex.settlement+json"

    proof = await (await client.get("/v1/ledger/proofs/consistency?from=5")).json()
    assert proof["to"] == 13  # default: the latest checkpoint
    verify_consistency(5, 13, [_b(h) for h in proof["hashes"]], old.root, new.root)

    resp = await client.get("/v1/ledger/entries/0")
    assert resp.status == 401 and "payload" not in await resp.json()  # unsigned: no record
    with pytest.raises(RemoteError) as err:
        await op.request("GET", "/v1/ledger/entries/13")
    assert err.value.status == 404


async def test_bad_parameters_are_422_naming_the_field(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    svc, client = await _client(aiohttp_client, db, tmp_path)
    await _append(svc, db, 0, 3)
    cases = {
        "/v1/ledger/proofs/inclusion": "index",
        "/v1/ledger/proofs/inclusion?index=abc": "index",
        "/v1/ledger/proofs/inclusion?index=-1": "index",
        "/v1/ledger/proofs/inclusion?index=3&size=3": "index",
        "/v1/ledger/proofs/inclusion?index=0&size=4": "size",
        "/v1/ledger/proofs/inclusion?index=0&size=x": "size",
        "/v1/ledger/proofs/consistency": "from",
        "/v1/ledger/proofs/consistency?from=0&to=3": "from",
        "/v1/ledger/proofs/consistency?from=3&to=2": "from",
        "/v1/ledger/proofs/consistency?from=1&to=99": "to",
        "/v1/ledger/entries/x1": "index",
    }
    for path, field in cases.items():
        resp = await client.get(path)
        body = await resp.json()
        assert (resp.status, body.get("field")) == (422, field), (path, body)
        assert resp.content_type == "application/problem+json"


async def test_publisher_task_starts_and_stops_with_the_app(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    svc = await make_services(db, tmp_path, origin=ORIGIN, checkpoint_interval_seconds=0.05)
    await _append(svc, db, 0, 2)
    client = await aiohttp_client(create_app(svc))
    await asyncio.sleep(0.3)  # the test's own connection stays idle while the publisher runs
    await client.close()  # cleanup_ctx cancels the task
    latest = await svc.ledger.latest_checkpoint()
    assert latest is not None and latest.size == 2


async def test_cli_over_http(aiohttp_client: Any, db: Any, tmp_path: Path, capsys: Any) -> None:
    from exchange.cli.main import main

    svc, client = await _client(aiohttp_client, db, tmp_path)
    await _append(svc, db, 0, 4)
    url = str(client.make_url("/")).rstrip("/")
    old = tmp_path / "cp4"
    assert await asyncio.to_thread(main, ["ledger", "checkpoint", "--url", url, "--out", str(old)]) == 0
    assert old.read_text().startswith(f"{ORIGIN}\n4\n")
    await _append(svc, db, 4, 3)
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["ledger", "prove", "--url", url, "--index", "5"]) == 0
    assert '"verified": true' in capsys.readouterr().out
    from federation.keys import SigningKey, encode_verifier_key

    # without --key the only keys are the ones the same server publishes: consistent, but UNTRUSTED (exit 3)
    assert await asyncio.to_thread(main, ["ledger", "verify", "--url", url, "--from", str(old)]) == 3
    out = capsys.readouterr().out
    assert "not pinned" in out and "UNTRUSTED" in out
    pinned = encode_verifier_key(ORIGIN, svc.identity.public_key)
    assert await asyncio.to_thread(main, ["ledger", "verify", "--url", url, "--from", str(old), "--key", pinned]) == 0
    assert "ok: checkpoint of size 7 verified against the pinned key and consistent" in capsys.readouterr().out
    # pinning a key the exchange does not sign with makes verification fail

    stranger = encode_verifier_key(ORIGIN, SigningKey.generate().public)
    assert await asyncio.to_thread(main, ["ledger", "verify", "--url", url, "--key", stranger]) == 1
    assert "no signature by a known key" in capsys.readouterr().err


async def test_cli_reads_an_entry_with_a_signed_request(
    aiohttp_client: Any, db: Any, tmp_path: Path, capsys: Any
) -> None:
    from exchange.cli.main import main

    svc, client = await _client(aiohttp_client, db, tmp_path)
    await _append(svc, db, 0, 3)
    url = str(client.make_url("/")).rstrip("/")
    op, stranger = SigningKey.generate(), SigningKey.generate()
    await svc.participants.add_by_operator("operator", "ops", op.public.to_base64())
    await svc.participants.add_by_operator("provider", "someone", stranger.public.to_base64())
    for name, key in (("op", op), ("stranger", stranger)):
        (tmp_path / f"{name}.pem").write_bytes(key.to_pem())
    capsys.readouterr()
    args = ["ledger", "entry", "--url", url, "--index", "1", "--key"]
    assert await asyncio.to_thread(main, [*args, str(tmp_path / "op.pem")]) == 0
    out = capsys.readouterr().out
    assert '"leaf_hash_matches": true' in out and '"record_id": "s-1"' in out
    assert await asyncio.to_thread(main, [*args, str(tmp_path / "stranger.pem")]) == 2
    captured = capsys.readouterr()
    assert "403" in captured.err and "s-1" not in captured.out + captured.err
