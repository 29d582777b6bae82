"""`hetex cri check`: accepts the published examples, rejects a one-character change naming the check."""

from __future__ import annotations

import json

import pytest

from exchange.cli.main import main
from identifiers.specs import specs_dir


def _examples() -> list[str]:
    lines = (specs_dir() / "cri-examples.txt").read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("cri", _examples())
def test_examples_accepted(cri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cri", "check", "--json", cri]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["canonical"] == cri


def test_changed_check_character_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    cri = _examples()[0]
    right = cri[-1]
    wrong = next(c for c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" if c != right)
    assert main(["cri", "check", cri[:-1] + wrong]) == 2
    err = capsys.readouterr().err
    assert "check character" in err
    assert right in err and wrong in err
