"""Terminal sessions, one per role, in a real pseudo-terminal (pexpect): what a person sees - a table that fits
100 columns with abbreviated ids, the export progress bar, and errors as one or two lines without a traceback."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from tests.exchange.registration_support import LiveServer

pexpect = pytest.importorskip("pexpect")
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REDRAW = re.compile(r"\x1b\[[0-9;]*[ABGK]")  # cursor up/down/column, erase line: a live display redrawing
WIDTH = 100


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main([*argv, "-o", "json"] if argv[0] not in ("keys", "admin") else [*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


class Terminal:
    """Runs `hetex ...` in a pseudo-terminal of WIDTH columns with a participant's key."""

    def __init__(self, live: LiveServer, home: Path) -> None:
        self.cwd = home
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "HETEX_URL": live.base,
            "HETEX_DATABASE_URL": live.url,
            "COLUMNS": str(WIDTH),
        }

    def run(self, key: Path, *argv: str) -> tuple[int, str]:
        """Exit status and screen text (ANSI codes removed)."""
        child = pexpect.spawn(
            str(Path(sys.executable).parent / "hetex"),
            list(argv),
            env={**self.env, "HETEX_KEY": str(key)},
            dimensions=(50, WIDTH),
            cwd=str(self.cwd),
            encoding="utf-8",
            timeout=120,
        )
        child.expect(pexpect.EOF)
        child.close()
        screen = ANSI.sub("", REDRAW.sub("\n", child.before or ""))
        return int(child.exitstatus if child.exitstatus is not None else -1), screen


def fits(screen: str) -> None:
    lines = [line.rstrip("\r") for line in screen.splitlines()]
    assert all(len(line) <= WIDTH for line in lines if not line.startswith("hetex: error")), screen  # messages wrap
    assert "Traceback" not in screen


@SQLITE_ONLY
def test_each_role_at_a_terminal(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    made = {n: cli_json(capsys, "keys", "new", "--out", str(keys), "--name", n) for n in ("acme", "lab", "ops", "reg")}
    key = {n: Path(m["private_key_file"]) for n, m in made.items()}
    url = ["--url", live.base]
    cli_json(capsys, "provider", "register", *url, "--key", str(key["acme"]), "--name", "Acme DC")
    site = cli_json(capsys, "site", "add", *url, "--key", str(key["acme"]), "--region", "CN-GZ", "--name", "h1")
    pool = cli_json(
        capsys, "pool", "add", *url, "--key", str(key["acme"]), "--site", site["cri"], "--model", "HW-910B3",
        "--devices", "16",
    )  # fmt: skip
    for ask in ("1200", "1300"):
        cli_json(capsys, "offer", "post", *url, "--key", str(key["acme"]), "--pool", pool["cri"], "--devices", "8",
                 "--ask-fen", ask)  # fmt: skip
    cli_json(capsys, "buyer", "register", *url, "--key", str(key["lab"]), "--name", "Lab")
    order = ["--devices", "8", "--models", "HW-910B3", "--duration", "2h", "--limit-fen", "2000"]
    cli_json(capsys, "order", "submit", *url, "--key", str(key["lab"]), *order)
    db = ["--database-url", live.url]
    cli_json(capsys, "admin", "add-operator", "--key", made["ops"]["public_key_file"], "--name", "ops", *db)
    cli_json(capsys, "admin", "add-regulator", "--key", made["reg"]["public_key_file"], "--name", "NDRC", *db)
    assert main(["round", "run", *db, "--key-dir", str(live.tmp / "keys")]) == 0
    capsys.readouterr()
    home = tmp_path / "home"
    home.mkdir()
    term = Terminal(live, home)

    # provider: a table with abbreviated ids; an error naming the field
    code, screen = term.run(key["acme"], "offer", "list")
    fits(screen)
    assert code == 0 and "offers (2)" in screen and pool["cri"] in screen
    ids = re.findall(r"^([0-9a-f]{8}[0-9a-f-]*)\s", screen, re.M)
    assert len(ids) == 2 and all(len(i) < 36 for i in ids)  # abbreviated, unique prefixes
    code, screen = term.run(key["acme"], "contract", "confirm", "ffff")
    fits(screen)
    assert code == 2 and screen.strip() == "hetex: error: no contract starts with 'ffff' (see `hetex contract list`)"

    # buyer: market table; every validation error of an order file with its field path
    code, screen = term.run(key["lab"], "market", "offers")
    fits(screen)
    assert code == 0 and "CN-GZ" in screen and "Ascend-DaVinci" in screen
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "quantity_devices: 0\nmodels: [HW-910B3]\nduration_seconds: -5\nlimit_fen_per_device_hour: {'*': 1}\n"
    )
    code, screen = term.run(key["lab"], "order", "submit", "--file", str(bad))
    fits(screen)
    assert code == 2 and "quantity_devices:" in screen and "duration_seconds:" in screen

    # operator: rounds as a table; a usage error
    code, screen = term.run(key["ops"], "round", "list")
    fits(screen)
    assert code == 0 and "rounds (1)" in screen and "completed" in screen
    code, screen = term.run(key["ops"], "round", "list", "--since", "yesterday-ish")
    assert code == 2 and "--since: not a time" in screen and len(screen.strip().splitlines()) == 2

    # regulator: the export's progress bar, download and verification; the exchange refusing a buyer
    pub = tmp_path / "exchange.pub"
    assert main(["admin", "identity", *db, "--key-dir", str(live.tmp / "keys"), "--pub-out", str(pub)]) == 0
    capsys.readouterr()
    out = home / "audit.tar.gz"
    code, screen = term.run(
        key["reg"], "audit", "export", "--from", "now-1d", "--out", "audit.tar.gz", "--trusted-key", str(pub)
    )
    fits(screen)
    assert code == 0 and out.is_file(), screen
    assert re.search(r"export (queued|running|done) .*━", screen), screen  # the rich progress bar
    assert "verified:" in screen and "signed by a --trusted-key" in screen
    code, screen = term.run(key["lab"], "audit", "export", "--from", "now-1d", "--out", "x.tgz")
    fits(screen)
    assert code == 2 and "regulator" in screen and len(screen.strip().splitlines()) <= 2
    assert not (home / "x.tgz").exists()
    assert os.listdir(home) == ["audit.tar.gz"]  # the client wrote what it was asked to, nothing else
