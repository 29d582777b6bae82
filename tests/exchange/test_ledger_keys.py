"""Exchange identity: key files (0600, by key id), key table, rotation keeps old signatures verifiable."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.cli.usage import build_usage_envelope
from exchange.services.identity import IdentityService, key_file
from exchange.storage.engine import make_engine, make_sessionmaker
from federation.canonical import canonical_bytes
from federation.dsse import verify_envelope
from federation.keys import SigningKey, key_id_hex, load_signing_key
from federation.merkle import verify_consistency
from federation.note import verify_checkpoint
from tests.dbs import run_async
from tests.exchange.ledgerkit import ORIGIN, append_n, make_ledger


async def test_key_file_created_once_with_mode_0600_and_never_logged(
    db: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_dir = tmp_path / "keys"
    first = IdentityService(db.sessions, key_dir, ORIGIN)
    info = await first.init()
    path = key_file(key_dir, info.key_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    second = IdentityService(db.sessions, key_dir, ORIGIN)  # a restart, or another process sharing key_dir
    assert (await second.load()).key_id == info.key_id == key_id_hex(ORIGIN, load_signing_key(path).public)
    assert second.key_id == first.key_id
    secret_pem = path.read_text()
    seed_hex = first.signing_key.seed().hex()
    logged = caplog.text + repr(first.signing_key) + repr(first)
    assert secret_pem.splitlines()[1] not in logged and seed_hex not in logged


async def test_rotation_keeps_old_checkpoints_and_records_verifiable(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    identity = ledger.identity
    first = await append_n(ledger, 3)
    cp_old = await ledger.checkpoint()
    old_id = identity.key_id
    operator = IdentityService(db.sessions, tmp_path / "keys", ORIGIN)  # another process: `hetex admin rotate-key`
    await operator.load()
    _old, new_info = await operator.rotate(ledger, overlap_seconds=0)
    assert (tmp_path / "keys" / f"{old_id}.pem").exists() and (tmp_path / "keys" / f"{new_info.key_id}.pem").exists()
    later = await append_n(ledger, 4, 3)  # index 3 is the rotation entry
    assert identity.key_id == new_info.key_id != old_id  # the running service follows the database
    cp_new = await ledger.checkpoint()
    assert (cp_old.key_id, cp_new.key_id) == (old_id, new_info.key_id)

    keys = {k.key_id: k for k in await identity.keys()}
    assert keys[old_id].status == "retired" and keys[old_id].not_after is not None
    assert keys[new_info.key_id].status == "current" and keys[new_info.key_id].not_after is None
    assert keys[old_id].not_after == keys[new_info.key_id].not_before  # overlap 0

    ring = await identity.keyring()
    old = verify_checkpoint(cp_old.note, ring, origin=ORIGIN)
    new = verify_checkpoint(cp_new.note, ring, origin=ORIGIN)
    proof = await ledger.consistency_proof(old.size, new.size)
    verify_consistency(old.size, new.size, proof.hashes, old.root, new.root)
    assert first[0].envelope["signatures"][0]["keyid"] == old_id
    assert later[0].envelope["signatures"][0]["keyid"] == new_info.key_id
    for rec in (*first, *later):
        verify_envelope(rec.envelope, ring)
    report = await ledger.verify_log()
    assert report.ok, [p.describe() for p in report.problems]

    # a key marked revoked is no longer trusted: what it signed is reported
    from sqlalchemy import update

    from exchange.storage.identity import ExchangeKey

    async with db.sessions.begin() as session:
        await session.execute(update(ExchangeKey).where(ExchangeKey.key_id == old_id).values(status="revoked"))
    report = await ledger.verify_log()
    names = [p.describe() for p in report.problems]
    assert any(n.startswith("entry 0: bad_signature") for n in names)
    assert any("entry 3: bad_signature" in n for n in names)  # the rotation entry, signed by the old key
    assert any("stored checkpoint of size 3" in n for n in names)


def test_cli_rotate_key_and_running_service_follows(
    fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HETEX_ORIGIN", ORIGIN)
    url, key_dir = fresh_db_factory(), tmp_path / "keys"

    async def serve_side(n: int, start: int) -> tuple[str, str]:
        engine = make_engine(url)
        try:
            ledger = await make_ledger(make_sessionmaker(engine), key_dir)
            await append_n(ledger, n, start)
            cp = await ledger.checkpoint()
            return ledger.identity.key_id, cp.note
        finally:
            await engine.dispose()

    old_id, _ = run_async(serve_side(2, 0))
    assert main(["admin", "rotate-key", "--database-url", url, "--key-dir", str(key_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["current"] != old_id
    assert {k["key_id"]: k["status"] for k in out["keys"]} == {old_id: "retired", out["current"]: "current"}
    assert all("PRIVATE" not in json.dumps(k) for k in out["keys"])
    new_id, _ = run_async(serve_side(2, 2))
    assert new_id == out["current"]
    assert main(["ledger", "verify", "--database-url", url, "--key-dir", str(key_dir)]) == 0
    assert "ok: 5 entries and 2 checkpoints" in capsys.readouterr().out  # 4 records and the rotation


async def test_signed_many_countersigns_with_the_key_current_under_the_lock(db: Any, tmp_path: Path) -> None:
    """append_signed_many countersigns before the log lock with the key this process last used; after a
    rotation by another process that guess is stale, and the records are countersigned again with the new key."""
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    node = SigningKey.generate()

    def usage(seq: int) -> dict[str, Any]:
        return build_usage_envelope(
            node,
            "node-key",
            contract_id="c-1",
            meter_id="m",
            seq=seq,
            period_start=60 * seq,
            period_end=60 * seq + 60,
            device_minutes=1,
            availability_bps=10_000,
        )

    async def append(seq: int) -> Any:
        async with db.sessions.begin() as session:
            return (await ledger.append_signed_many(session, [("usage", f"u-{seq}", usage(seq))]))[0]

    before = await append(1)
    old_id = ledger.identity.key_id
    operator = IdentityService(db.sessions, tmp_path / "keys", ORIGIN)  # another process: `hetex admin rotate-key`
    await operator.load()
    _old, new_info = await operator.rotate(ledger, overlap_seconds=0)
    assert ledger.identity.last_signer() is not None and ledger.identity.last_signer()[0] == old_id  # stale guess
    after = await append(2)
    ring = await ledger.identity.keyring()
    signers = [[s["keyid"] for s in r.envelope["signatures"]] for r in (before, after)]
    assert signers == [["node-key", old_id], ["node-key", new_info.key_id]]
    for r in (before, after):
        exchange_only = {**r.envelope, "signatures": r.envelope["signatures"][1:]}
        verify_envelope(exchange_only, ring)
        assert r.payload == canonical_bytes(r.envelope)  # the stored bytes are the countersigned envelope
