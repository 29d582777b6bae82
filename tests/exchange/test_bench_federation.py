"""`hetex bench federation`: the JSON report of a small national market (merged vs hub vs greedy, in one
run) and bad input refused with exit 2. (The HTTP mode starts real processes: it is exercised by
tests/federation/test_hub_multiprocess.py's protocol and run by hand, see specs/federation.md 9.5.)"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from exchange.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_federation_reports_hub_merged_and_greedy(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "federation", "--exchanges", "3", "--orders", "120", "--pools", "30", "--seed", "2"]
    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0
    r: dict[str, Any] = json.loads(out)
    assert r["exchanges"] == 3 and r["orders"] == 120 and r["scu_orders"] > 0
    assert r["hub_welfare_fen"] <= r["merged_lp_bound_fen"] and r["merged_welfare_fen"] <= r["merged_lp_bound_fen"]
    assert Decimal(r["welfare_ratio_to_merged"]) >= Decimal("0.99")
    assert Decimal(r["welfare_ratio_to_merged"]) > Decimal(r["welfare_ratio_greedy"])
    assert r["forwarded_orders"] > 0 and Decimal(r["peer_messages_per_order"]) >= 2
    assert 0 < Decimal(r["fill_rate"]) <= 1
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "welfare_ratio_to_merged" in out and "greedy" in out


@pytest.mark.parametrize("bad", [["--exchanges", "1"], ["--exchanges", "13"], ["--orders", "0"]])
def test_bench_federation_refuses_bad_sizes(capsys: pytest.CaptureFixture[str], bad: list[str]) -> None:
    code, out, err = run(capsys, "bench", "federation", *bad)
    assert code == 2 and out == "" and "Traceback" not in err and err.strip().count("\n") == 0
