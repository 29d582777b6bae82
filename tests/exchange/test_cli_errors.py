"""The CLI's one error path: a missing, unreachable or unmigrated database, a public key passed as --key and a
bad --database-url each give one or two lines naming what and how to fix, a documented exit code, no
traceback (unless -v) and no stray files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from exchange.cli.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, report_failure
from exchange.cli.main import main
from federation.keys import generate_keypair_files

DB_VERBS = [
    ["round", "run"],
    ["settle", "run"],
    ["ledger", "checkpoint"],
    ["market", "snapshot", "--out", "snap.json"],
    ["db", "current"],
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_message(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, err
    assert "Traceback" not in err
    return lines


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HETEX_DATABASE_URL", raising=False)
    monkeypatch.setenv("HETEX_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path


@pytest.mark.parametrize("verb", DB_VERBS, ids=lambda v: " ".join(v[:2]))
def test_missing_sqlite_database(verb: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *verb, "--database-url", "sqlite:///missing.db")
    lines = one_message(err)
    assert code == EXIT_UNAVAILABLE and "no database at" in lines[0] and "missing.db" in lines[0]
    assert "hetex db upgrade" in err and out == ""
    assert sorted(os.listdir(workdir)) == []  # no database file, no key directory, no snapshot


@pytest.mark.parametrize("verb", DB_VERBS[:4], ids=lambda v: " ".join(v[:2]))
def test_unmigrated_sqlite_database(verb: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "empty.db").write_bytes(b"")
    code, _, err = run(capsys, *verb, "--database-url", "sqlite:///empty.db")
    lines = one_message(err)
    assert code == EXIT_UNAVAILABLE and "empty (never migrated)" in lines[0] and "hetex db upgrade" in lines[0]
    assert sorted(os.listdir(workdir)) == ["empty.db"]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://127.0.0.1:1/hetex", "cannot open the database at postgresql+asyncpg://127.0.0.1:1/hetex"),
        ("postgresql://user:s3cret@127.0.0.1:5432/hetex_no_such_db", "hetex_no_such_db"),
    ],
)
@pytest.mark.parametrize("verb", [DB_VERBS[0], DB_VERBS[4]], ids=lambda v: " ".join(v[:2]))
def test_unreachable_postgres(
    verb: list[str], url: str, needle: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *verb, "--database-url", url)
    lines = one_message(err)
    assert code == EXIT_UNAVAILABLE and needle in lines[0] and "s3cret" not in err
    assert os.listdir(workdir) == []


def test_bad_database_url_blames_the_flag(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "db", "current", "--database-url", "mysql://x/y")
    assert code == EXIT_USAGE and one_message(err)[0].startswith("hetex: error: --database-url: ")
    assert "HETEX_DATABASE_URL" not in err
    os.environ["HETEX_DATABASE_URL"] = "mysql://x/y"
    try:
        code, _, err = run(capsys, "db", "current")
    finally:
        del os.environ["HETEX_DATABASE_URL"]
    assert code == EXIT_USAGE and "HETEX_DATABASE_URL" in err


def test_public_key_as_key_names_the_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _private, public = generate_keypair_files(workdir, "buyer")
    code, _, err = run(capsys, "contract", "list", "--url", "http://127.0.0.1:9", "--key", str(public))
    lines = one_message(err)
    assert code == EXIT_USAGE and str(public) in lines[0] and "public key" in lines[0] and ".pem" in lines[0]


def test_internal_error_one_line_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        assert report_failure(exc, argparse.Namespace(), verbose=False) == EXIT_FAILURE
        err = capsys.readouterr().err
        assert one_message(err)[0] == "hetex: internal error: RuntimeError: boom" and "-v" in err
        assert report_failure(exc, argparse.Namespace(), verbose=True) == EXIT_FAILURE
        assert "Traceback" in capsys.readouterr().err


def test_usage_error_exit_2_and_group_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["contract", "list", "--limit", "many"])
    assert done.value.code == EXIT_USAGE and "--limit" in capsys.readouterr().err
    assert main(["contract"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "list" in err and "confirm" in err and "usage: hetex contract" in err
