"""Append-only enforcement (database triggers, refusal in code); tampering detected by `hetex ledger verify`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from exchange.cli.main import main
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.ledger import AppendOnlyError, LogEntry, LogNode
from exchange.storage.ledger import Checkpoint as CheckpointRow
from tests.dbs import run_async
from tests.exchange.ledgerkit import ORIGIN, append_n, make_ledger

ROW_CHANGES = [
    "UPDATE log_entries SET record_id = 'x' WHERE idx = 0",
    "DELETE FROM log_entries WHERE idx = 0",
    "UPDATE log_nodes SET hash = hash WHERE level = 1",
    "DELETE FROM log_nodes WHERE level = 1",
    "UPDATE checkpoints SET note = 'x'",
    "DELETE FROM checkpoints",
]


async def test_database_triggers_refuse_update_and_delete(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 2)
    await ledger.checkpoint()
    for sql in ROW_CHANGES:
        with pytest.raises((DBAPIError, IntegrityError)) as exc:
            async with db.sessions.begin() as session:
                await session.execute(text(sql))
        assert "append-only" in str(exc.value)
    if db.backend == "pg":
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.sessions.begin() as session:
                await session.execute(text("TRUNCATE log_entries CASCADE"))
    assert (await ledger.verify_log()).ok


async def test_code_refuses_orm_update_and_delete(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 2)
    await ledger.checkpoint()
    for model in (LogEntry, CheckpointRow):
        with pytest.raises(AppendOnlyError):
            async with db.sessions.begin() as session:
                row = await session.get(model, 0 if model is LogEntry else 2)
                assert row is not None
                await session.delete(row)
        with pytest.raises(AppendOnlyError):
            async with db.sessions.begin() as session:
                row = await session.get(model, 0 if model is LogEntry else 2)
                assert row is not None
                if model is LogEntry:
                    row.record_id = "changed"
                else:
                    row.note = "changed"
    for stmt in (update(LogEntry).values(record_id="x"), delete(LogNode), delete(CheckpointRow)):
        with pytest.raises(AppendOnlyError):
            async with db.sessions.begin() as session:
                await session.execute(stmt)
    assert (await ledger.verify_log()).ok


# ---------------------------------------------------------------------------------------------------
# tampering directly in the database (triggers bypassed), detected by `hetex ledger verify`


def _populate(url: str, key_dir: Path, n: int = 8, start: int = 0) -> None:
    async def go() -> None:
        engine = make_engine(url)
        try:
            ledger = await make_ledger(make_sessionmaker(engine), key_dir)
            await append_n(ledger, n, start)
            await ledger.checkpoint()
        finally:
            await engine.dispose()

    run_async(go())


def _tamper(url: str, backend: str, statements: list[str]) -> None:
    """Run raw SQL with the append-only triggers out of the way (superuser on PostgreSQL)."""

    async def go() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                if backend == "pg":
                    for table in ("log_entries", "log_nodes", "checkpoints"):
                        await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                else:
                    for table in ("log_entries", "log_nodes", "checkpoints"):
                        for verb in ("update", "delete"):
                            await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
                for sql in statements:
                    await conn.execute(text(sql))
                if backend == "pg":
                    for table in ("log_entries", "log_nodes", "checkpoints"):
                        await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        finally:
            await engine.dispose()

    run_async(go())


def _verify(url: str, key_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["ledger", "verify", "--database-url", url, "--key-dir", str(key_dir), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def env_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HETEX_ORIGIN", ORIGIN)


TAMPERS: dict[str, tuple[Callable[[str], list[str]], list[str]]] = {
    # stored bytes changed (a trailing space), leaf hash left alone
    "change_payload": (
        lambda b: ["UPDATE log_entries SET payload = " + _concat(b, "payload", "' '") + " WHERE idx = 3"],
        ["entry 3: leaf_hash_mismatch", "entries 0..7: checkpoint_root_mismatch"],
    ),
    # the signature inside the stored envelope changed
    "change_signature": (
        lambda b: [
            "UPDATE log_entries SET payload = " + _replace(b, "payload", '"sig":"', '"sig":"AAAA') + " WHERE idx = 4"
        ],
        ["entry 4: leaf_hash_mismatch", "entry 4: bad_signature"],
    ),
    # a row's bytes replaced with another row's (payload and leaf hash consistent, signature valid)
    "replace_row": (
        lambda _b: [
            "UPDATE log_entries SET payload = (SELECT payload FROM log_entries WHERE idx = 6), "
            "leaf_hash = (SELECT leaf_hash FROM log_entries WHERE idx = 6) WHERE idx = 5"
        ],
        ["entries 4..5: node_mismatch", "checkpoint_root_mismatch"],
    ),
    "delete_row": (
        lambda _b: ["DELETE FROM log_entries WHERE idx = 2"],
        ["entry 2: entry_missing"],
    ),
    "delete_last_row": (
        lambda _b: ["DELETE FROM log_entries WHERE idx = 7"],
        ["entry 7: entry_missing"],
    ),
    # reorder: rows 1 and 6 swap their positions
    "reorder_rows": (
        lambda _b: [
            "UPDATE log_entries SET idx = 1000 WHERE idx = 1",
            "UPDATE log_entries SET idx = 1 WHERE idx = 6",
            "UPDATE log_entries SET idx = 6 WHERE idx = 1000",
        ],
        ["entries 0..1: node_mismatch", "entries 6..7: node_mismatch", "checkpoint_root_mismatch"],
    ),
    "change_node": (
        lambda _b: ["UPDATE log_nodes SET hash = (SELECT leaf_hash FROM log_entries WHERE idx = 0) WHERE level = 2"],
        ["node_mismatch"],
    ),
}


def _replace(backend: str, column: str, old: str, new: str) -> str:
    if backend == "pg":
        return f"convert_to(replace(convert_from({column}, 'UTF8'), '{old}', '{new}'), 'UTF8')"
    return f"CAST(replace(CAST({column} AS TEXT), '{old}', '{new}') AS BLOB)"


def _concat(backend: str, column: str, extra: str) -> str:
    return f"{column} || convert_to({extra}, 'UTF8')" if backend == "pg" else f"CAST({column} || {extra} AS BLOB)"


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_verify_detects_tampering(
    case: str, backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: Any, env_origin: None
) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    _populate(url, keys)
    code, out = _verify(url, keys, capsys)
    assert code == 0, out
    assert "ok: 8 entries" in out
    make_sql, expected = TAMPERS[case]
    _tamper(url, backend, make_sql(backend))
    code, out = _verify(url, keys, capsys)
    assert code == 1, out
    for needle in expected:
        assert needle in out, (needle, out)


def test_verify_from_earlier_checkpoint(
    backend: str, fresh_db_factory: Callable[[], str], tmp_path: Path, capsys: Any, env_origin: None
) -> None:
    url, keys = fresh_db_factory(), tmp_path / "keys"
    _populate(url, keys, 5)
    old = tmp_path / "cp5"
    assert main(["ledger", "checkpoint", "--database-url", url, "--key-dir", str(keys), "--out", str(old)]) == 0
    capsys.readouterr()
    _populate(url, keys, 6, 5)  # 11 entries, new checkpoint
    code, out = _verify(url, keys, capsys, "--from", str(old))
    assert code == 0, out
    # an earlier checkpoint the log is not consistent with (its root is of another log)
    other_url, other_keys = fresh_db_factory(), tmp_path / "other"
    _populate(other_url, other_keys, 5, 100)
    forged = tmp_path / "forged"
    assert (
        main(["ledger", "checkpoint", "--database-url", other_url, "--key-dir", str(keys), "--out", str(forged)]) == 0
    )
    capsys.readouterr()
    code, out = _verify(url, keys, capsys, "--from", str(forged))
    assert code == 1
    assert "earlier checkpoint #1 does not match the recomputed tree" in out
    # a change below the earlier checkpoint's size is named
    _tamper(url, backend, ["DELETE FROM log_entries WHERE idx = 4"])
    code, out = _verify(url, keys, capsys, "--from", str(old))
    assert code == 1 and "entry 4: entry_missing" in out
