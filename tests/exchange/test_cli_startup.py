"""The CLI starts fast: importing it, printing help and parsing a client verb pull in no solver, database,
dataframe or HTTP-server code (checked in fresh interpreters through sys.modules, never by timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.cli.main import COMMANDS, build_parser, main

HEAVY = ("ortools", "scipy", "numpy", "sqlalchemy", "pandas", "alembic", "asyncpg", "aiosqlite", "pydantic")
SERVER = ("aiohttp", "exchange.api", "exchange.services", "exchange.composition", "matching")
ROOT = Path(__file__).resolve().parents[2]


def modules_after(code: str, tmp_path: Path) -> set[str]:
    """sys.modules of a fresh interpreter after running `code` (stdout of the code is discarded)."""
    script = (
        "import io, json, sys, contextlib\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
        "    try:\n"
        + "".join(f"        {line}\n" for line in code.splitlines())
        + "    except SystemExit:\n        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes))


def test_import_and_help_load_nothing_heavy(tmp_path: Path) -> None:
    mods = modules_after("import exchange.cli.main", tmp_path)
    assert loaded(mods, HEAVY + SERVER + ("rich", "cryptography")) == []
    mods = modules_after("from exchange.cli.main import main\nmain(['--help'])", tmp_path)
    assert loaded(mods, HEAVY + SERVER + ("rich", "cryptography")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["contract", "list", "--help"],
        ["order", "submit", "--help"],
        ["market", "offers", "--help"],
        ["round", "list", "--help"],
        ["audit", "export", "--help"],
        ["statement", "--help"],
        ["config", "show"],
    ],
)
def test_client_verbs_parse_without_heavy_imports(argv: list[str], tmp_path: Path) -> None:
    mods = modules_after(f"from exchange.cli.main import main\nmain({argv!r})", tmp_path)
    heavy = HEAVY if argv[0] == "audit" else HEAVY + SERVER
    assert loaded(mods, heavy) == [], argv


def test_client_verb_runs_without_aiohttp_or_the_service(tmp_path: Path) -> None:
    from federation.keys import generate_keypair_files

    key, _ = generate_keypair_files(tmp_path, "k")
    argv = ["order", "list", "--url", "http://127.0.0.1:9", "--key", str(key)]
    code = f"from exchange.cli.main import main\nmain({argv!r})"
    assert loaded(modules_after(code, tmp_path), HEAVY + SERVER) == []


def test_bare_hetex_prints_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: hetex" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("hetex ")


def test_command_table_matches_the_modules() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {n for n, _, _ in COMMANDS}
    for name, help_text, _ in COMMANDS:
        lazy = build_parser(["--help"])
        lazy_sub = next(a for a in lazy._actions if a.__class__.__name__ == "_SubParsersAction")
        assert name in lazy_sub.choices and help_text
        real = sub.choices[name]  # a real parser with verbs or a function, not a placeholder
        assert real.get_default("func") or any(a.__class__.__name__ == "_SubParsersAction" for a in real._actions)


def test_match_methods_match_the_solver() -> None:
    from exchange.cli import match
    from matching.clearing import METHODS

    assert match.METHODS == METHODS
