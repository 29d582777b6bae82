"""Exchange key lifecycle (issue 10 bugs 1 and 7): keys are created only by `hetex admin init` or the first
`hetex serve` of an empty database; every other process loads the current key or refuses, leaving the database
as it was; rotation is explicit and logged; the service never signs outside a key's validity."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.pool import NullPool

from exchange.cli.main import main
from exchange.services.identity import ExchangeKeyNotValidError, key_file
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.identity import ExchangeKey
from exchange.storage.ledger import Checkpoint, LogEntry
from exchange.storage.rounds import Round
from federation.dsse import verify_envelope
from federation.keys import SigningKey, VerifyKey, key_id_hex, load_signing_key
from federation.note import verify_checkpoint
from tests.exchange.ledgerkit import ORIGIN, append_n, make_ledger

ROOT = Path(__file__).resolve().parents[2]


async def db_state(url: str) -> dict[str, Any]:
    """Everything a keyless or failing process could have changed: key rows, log, checkpoints, rounds."""
    engine = make_engine(url, poolclass=NullPool) if "postgresql" in url else make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            keys = (await s.scalars(select(ExchangeKey).order_by(ExchangeKey.key_id))).all()
            return {
                "keys": [(k.key_id, k.public_key, k.status, k.not_before, k.not_after) for k in keys],
                "log": (await s.scalar(select(func.count()).select_from(LogEntry))) or 0,
                "checkpoints": (await s.scalar(select(func.count()).select_from(Checkpoint))) or 0,
                "rounds": (await s.scalar(select(func.count()).select_from(Round))) or 0,
            }
    finally:
        await engine.dispose()


def init_exchange(url: str, key_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """`hetex admin init`; returns the key id it printed."""
    assert main(["admin", "init", "--json", "--database-url", url, "--key-dir", str(key_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["key_file"]) == key_file(key_dir, out["key_id"]).resolve()
    return str(out["key_id"])


def test_admin_init_creates_one_key_once(
    fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("HETEX_ORIGIN", ORIGIN)
    url, key_dir = fresh_db_factory(), tmp_path / "keys"
    kid = init_exchange(url, key_dir, capsys)
    path = key_file(key_dir, kid)
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(key_dir.stat().st_mode & 0o777) == "0o700"
    assert key_id_hex(ORIGIN, load_signing_key(path).public) == kid
    before = run(db_state(url))
    assert [(k[0], k[2], k[4]) for k in before["keys"]] == [(kid, "current", None)]
    # a second init (same or another folder) refuses, naming rotate-key, and changes nothing
    assert main(["admin", "init", "--database-url", url, "--key-dir", str(tmp_path / "other")]) == 2
    assert "rotate-key" in capsys.readouterr().err
    assert run(db_state(url)) == before and not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["round", "run", "--json"],
        ["settle", "run", "--json"],
        ["admin", "rotate-key"],
        ["admin", "identity"],
        ["ledger", "checkpoint"],
    ],
)
def test_signing_commands_from_a_keyless_folder_refuse_and_change_nothing(
    argv: list[str],
    fresh_db_factory: Callable[[], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HETEX_ORIGIN", ORIGIN)
    url = fresh_db_factory()
    kid = init_exchange(url, tmp_path / "a" / "keys", capsys)
    run(_grow(url, tmp_path / "a" / "keys"))  # a log that has grown since its last checkpoint
    before = run(db_state(url))
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("HETEX_KEY_DIR", raising=False)
    assert main([*argv, "--database-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and kid in err and "HETEX_KEY_DIR" in err, err
    assert "Traceback" not in err
    assert run(db_state(url)) == before
    assert not (elsewhere / ".hetex").exists()  # no key directory, no key file minted here


async def _grow(url: str, key_dir: Path) -> None:
    engine = make_engine(url, poolclass=NullPool) if "postgresql" in url else make_engine(url)
    try:
        ledger = await make_ledger(make_sessionmaker(engine), key_dir)
        await append_n(ledger, 2)
    finally:
        await engine.dispose()


def test_commands_on_a_database_without_a_key_name_admin_init(
    fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    url = fresh_db_factory()
    monkeypatch.chdir(tmp_path)
    before = run(db_state(url))
    assert main(["round", "run", "--database-url", url]) == 2
    assert "hetex admin init" in capsys.readouterr().err
    assert run(db_state(url)) == before == {"keys": [], "log": 0, "checkpoints": 0, "rounds": 0}


def serve(url: str, cwd: Path, port: int, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m exchange serve` from `cwd` (expected to exit by itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "exchange", "serve", "--database-url", url, "--port", str(port), "--dev", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_that_cannot_bind_changes_nothing_even_on_an_empty_database(
    fresh_db_factory: Callable[[], str], tmp_path: Path
) -> None:
    url = fresh_db_factory()
    before = run(db_state(url))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve(url, tmp_path, port)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot listen on 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr
    assert run(db_state(url)) == before and not (tmp_path / ".hetex").exists()


def test_second_serve_from_another_folder_refuses_and_keeps_the_key(
    fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    url = fresh_db_factory()
    kid = init_exchange(url, tmp_path / "a" / ".hetex" / "keys", capsys)
    before = run(db_state(url))
    (tmp_path / "b").mkdir()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = serve(url, tmp_path / "b", port)
    assert done.returncode == 2, done.stderr[-2000:]
    assert kid in done.stderr and "HETEX_KEY_DIR" in done.stderr and "Traceback" not in done.stderr
    assert run(db_state(url)) == before
    assert not list((tmp_path / "b").rglob("*.pem"))


async def test_rotation_is_logged_signed_by_the_old_key_naming_the_new(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 2)
    old_id, old_key = await ledger.identity.signer_for()
    old, new = await ledger.identity.rotate(ledger, overlap_seconds=600)
    assert old.key_id == old_id != new.key_id and old.not_after == new.not_before + 600
    async with db.sessions() as s:
        entry = await s.scalar(select(LogEntry).where(LogEntry.idx == 2))
    assert entry is not None and entry.record_type == "exchange-key"
    envelope = json.loads(entry.payload)
    assert [s["keyid"] for s in envelope["signatures"]] == [old_id]
    ring = await ledger.identity.keyring()
    body = json.loads(verify_envelope(envelope, ring, payload_type="application/vnd.hetex.exchange-key+json"))
    assert body["old"]["key_id"] == old_id and body["new"]["key_id"] == new.key_id
    assert key_id_hex(ORIGIN, VerifyKey.from_base64(body["new"]["public_key"])) == new.key_id
    # from now on the new key signs; the old key is never used again, and everything verifies
    later = await append_n(ledger, 1, 2)
    assert [s["keyid"] for s in later[0].envelope["signatures"]] == [new.key_id]
    cp = await ledger.checkpoint()
    assert cp.key_id == new.key_id
    verify_checkpoint(cp.note, ring, origin=ORIGIN)
    report = await ledger.verify_log()
    assert report.ok, [p.describe() for p in report.problems]
    assert base64.b64decode(body["new"]["public_key"]) != old_key.public.raw


async def test_never_signs_with_a_key_outside_its_validity(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    kid, _ = await ledger.identity.signer_for()
    async with db.sessions.begin() as s:
        await s.execute(update(ExchangeKey).where(ExchangeKey.key_id == kid).values(not_after=1))
    with pytest.raises(ExchangeKeyNotValidError, match="rotate-key"):
        await append_n(ledger, 1)
    with pytest.raises(ExchangeKeyNotValidError):
        await ledger.checkpoint()
    async with db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(LogEntry)) == 0


def run(coro: Any) -> Any:
    """Run a coroutine from a sync test."""
    from tests.dbs import run_async

    return run_async(coro)


async def test_bundle_and_keys_endpoint_carry_validity_and_rederivable_ids(db: Any, tmp_path: Path) -> None:
    import tarfile

    from tests.exchange.appfactory import make_services
    from tests.exchange.auditkit import ledger_fill
    from tests.exchange.test_audit_export import add_regulator, run_export

    svc = await make_services(db, tmp_path, exports_dir=tmp_path / "exports")
    reg = await add_regulator(svc)
    await ledger_fill(svc.ledger, SigningKey.generate(), 5)
    old, new = await svc.identity.rotate(svc.ledger, overlap_seconds=60)
    st = await run_export(svc, reg)
    with tarfile.open(await svc.audit.bundle_path(reg, st.id)) as tar:
        docs = [json.load(tar.extractfile(m)) for m in tar if "/keys/" in m.name and m.isfile()]  # type: ignore[arg-type]
    exchange = {d["key_id"]: d for d in docs if d["role"] == "exchange"}
    assert set(exchange) == {old.key_id, new.key_id}
    for d in exchange.values():
        assert key_id_hex(d["name"], VerifyKey.from_base64(d["public_key"])) == d["key_id"]
    assert (exchange[old.key_id]["not_before"], exchange[old.key_id]["not_after"]) == (
        old.not_before,
        new.not_before + 60,
    )
    assert (exchange[new.key_id]["not_before"], exchange[new.key_id]["not_after"]) == (new.not_before, None)
    listed = {k.key_id: k.to_json() for k in await svc.identity.keys()}
    assert {k: (v["not_before"], v["not_after"], v["status"]) for k, v in listed.items()} == {
        old.key_id: (old.not_before, old.not_after, "retired"),
        new.key_id: (new.not_before, None, "current"),
    }


def test_rotate_key_with_a_bad_overlap_is_refused_before_the_database(
    fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    url, key_dir = fresh_db_factory(), tmp_path / "keys"
    init_exchange(url, key_dir, capsys)
    before = run(db_state(url))
    for bad in ("1 hour", "-5m", "1e3s", ""):
        assert main(["admin", "rotate-key", f"--overlap={bad}", "--database-url", url, "--key-dir", str(key_dir)]) == 2
        assert "(overlap)" in capsys.readouterr().err
    # not even an unreachable database is contacted first
    dead = "postgresql://nobody@127.0.0.1:1/none"
    assert main(["admin", "rotate-key", "--overlap", "soon", "--database-url", dead, "--key-dir", str(key_dir)]) == 2
    assert "(overlap)" in capsys.readouterr().err
    assert run(db_state(url)) == before and len(list(key_dir.glob("*.pem"))) == 1


async def test_a_key_directory_from_before_the_lifecycle_is_still_read(db: Any, tmp_path: Path) -> None:
    from exchange.services.identity import IdentityService

    first = IdentityService(db.sessions, tmp_path / "keys", ORIGIN)
    info = await first.init()
    key_file(tmp_path / "keys", info.key_id).rename(tmp_path / "keys" / "exchange.pem")  # the old layout
    again = IdentityService(db.sessions, tmp_path / "keys", ORIGIN)
    assert (await again.load()).key_id == info.key_id


async def test_ledger_verify_names_signatures_made_outside_the_key_validity(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 2)
    cp = await ledger.checkpoint()
    assert (await ledger.verify_log()).ok
    async with db.sessions.begin() as s:  # the key table now says the key only became valid later
        await s.execute(update(ExchangeKey).where(ExchangeKey.key_id == cp.key_id).values(not_before=4_000_000_000))
    problems = [p.describe() for p in (await ledger.verify_log()).problems]
    assert sum("key_not_valid" in p for p in problems) == 3, problems  # two entries and the checkpoint
    assert any("stored checkpoint of size 2" in p and "key_not_valid" in p for p in problems)


async def test_rotation_entry_is_logged_inside_the_old_key_validity_even_at_overlap_0(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exchange.services.ledger as ledger_module

    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 1)
    real = ledger_module.now_s
    monkeypatch.setattr(ledger_module, "now_s", lambda: real() + 1)  # the clock ticks while the rotation runs
    await ledger.identity.rotate(ledger, overlap_seconds=0)
    await append_n(ledger, 1, 1)
    await ledger.checkpoint()
    report = await ledger.verify_log()
    assert report.ok, [p.describe() for p in report.problems]


async def test_a_live_request_the_exchange_cannot_sign_is_503_with_retry_after(
    db: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    """A serving process that cannot read the current key (another process rotated it into a key folder this
    one does not see) answers 503 problem+json with Retry-After (the operator's fix, not the caller's), not
    409; nothing is signed or stored."""
    import shutil

    from exchange.composition import build_services
    from exchange.settings import Settings
    from tests.exchange.appfactory import make_services, serve

    svc = await make_services(db, tmp_path)  # the current key is in tmp_path/keys
    http = await serve(aiohttp_client, svc)
    shutil.copytree(tmp_path / "keys", tmp_path / "other")
    other = await build_services(Settings(database_url=db.url, key_dir=tmp_path / "other"), sessions=db.sessions)
    await other.identity.rotate(other.ledger)  # the new key file is only in tmp_path/other
    resp = await http.get("/v1/ledger/checkpoint")  # the log grew (the rotation): a checkpoint must be signed
    assert resp.status == 503 and resp.content_type == "application/problem+json"
    assert int(resp.headers["Retry-After"]) > 0
    problem = await resp.json()
    assert problem["status"] == 503 and problem["code"] == "exchange_key_missing"
    async with db.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Checkpoint)) == 0
