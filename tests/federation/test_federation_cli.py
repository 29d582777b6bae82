"""`hetex admin identity | add-peer | peers`: the operator peers two exchanges from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exchange.cli.main import main
from tests.dbs import migrate


def use_exchange(
    monkeypatch: pytest.MonkeyPatch, root: Path, authority: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Point the CLI at one exchange's database, keys and authority (as `hetex serve` would use them); the
    operator has run `hetex admin init` once."""
    url = f"sqlite:///{root / authority}.db"
    migrate(url.replace("sqlite:", "sqlite+aiosqlite:"))
    monkeypatch.setenv("HETEX_DATABASE_URL", url)
    monkeypatch.setenv("HETEX_KEY_DIR", str(root / f"keys-{authority}"))
    monkeypatch.setenv("HETEX_AUTHORITY", authority)
    monkeypatch.setenv("HETEX_ORIGIN", f"{authority.lower()}.hetex.test/log")
    assert main(["admin", "init"]) == 0
    capsys.readouterr()


def test_add_peer_from_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_exchange(monkeypatch, tmp_path, "B", capsys)
    assert main(["admin", "identity", "--json"]) == 0
    ident_b = json.loads(capsys.readouterr().out)
    assert ident_b["authority"] == "B" and ident_b["verifier_key"].startswith("b.hetex.test/log+")

    use_exchange(monkeypatch, tmp_path, "A", capsys)
    args = [
        "admin",
        "add-peer",
        "--url",
        "http://127.0.0.12:8470",
        "--key",
        ident_b["verifier_key"],
        "--authority",
        "B",
    ]
    assert main(args) == 0
    assert "peer B added" in capsys.readouterr().out
    assert main(["admin", "peers", "--json"]) == 0
    (peer,) = json.loads(capsys.readouterr().out)
    assert (peer["authority"], peer["key_id"], peer["origin"]) == ("B", ident_b["key_id"], "b.hetex.test/log")

    # a bare base64 key needs the origin; a peer cannot take this exchange's own authority
    assert (
        main(["admin", "add-peer", "--url", "http://127.0.0.13:1", "--key", ident_b["public_key"], "--authority", "C"])
        == 2
    )
    assert "origin" in capsys.readouterr().err
    assert main(["admin", "add-peer", "--url", "http://x:1", "--key", ident_b["verifier_key"], "--authority", "A"]) == 2
    assert "own authority" in capsys.readouterr().err
