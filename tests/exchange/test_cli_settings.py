"""Every HETEX_* setting is documented in one generated table, and the README holds exactly that table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.cli.settings_doc import SERVICE, markdown_table, rows
from exchange.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_setting_is_described() -> None:
    assert set(Settings.model_fields) <= set(SERVICE), set(Settings.model_fields) - set(SERVICE)
    assert all(meaning for _, _, meaning in rows())


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    documented = {var for var, _, _ in rows()}
    used: set[str] = set()
    for package in ("exchange", "federation", "identifiers", "matching", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            used |= set(re.findall(r"\bHETEX_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    used -= {"HETEX_NAME"}  # the placeholder in `HETEX_NAME` prose
    assert used <= documented, sorted(used - documented)


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", readme, re.S)
    assert found is not None and found.group(1) == markdown_table()


def test_serve_help_lists_the_settings(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(var in out for var, _, _ in rows())
