"""The same snapshot gives byte-identical results on any machine and under any load: solver limits are
deterministic work limits; a limit that stops a step is named in the result, and a skipped check fails
the audit (bug 2 of issue 15)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from matching.clearing import clear
from matching.generators import generate
from matching.model import Market


def test_same_snapshot_same_bytes_even_under_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # gang: multi-pool gangs; nodes: single-node gangs through the exact polish (HiGHS, node limits); the
    # 400 x 70 gang market, kept off the small-market whole MIP, goes through the restricted model and the
    # integer root bound (matching.restricted)
    from matching import clearing

    def run(i: int, m: Market) -> str:
        with monkeypatch.context() as mp:
            if i == 2:
                mp.setattr(clearing, "EXACT_MAX_COLUMNS", 0)
            return clear(m).canonical_json()

    ms = [generate("gang", 300, 40, 3), generate("nodes", 400, 120, 3), generate("gang", 400, 70, 3)]
    first = [run(i, m) for i, m in enumerate(ms)]
    assert '"bound_fen":616176' in first[2].replace(" ", "")  # the integer root bound (LP bound 625,351)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        second = [run(i, m) for i, m in enumerate(ms)]
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert first == second
    m = ms[0]
    assert clear(m, method="greedy").canonical_json() == clear(m, method="greedy").canonical_json()


def test_price_limit_hit_is_recorded_and_fails_the_audit() -> None:
    m = generate("windows", 400, 60, 1)  # start windows: prices from the dual LP, which has a work limit
    r = clear(m, time_limit=1e-9)
    assert "prices" in r.stats.limits_hit
    checks = {c.name: c for c in r.audit.checks}
    assert checks["prices"].violations == 1
    assert checks["no_envy"].detail.startswith("not checked")
    assert not r.audit.ok and r.stats.prices_method == "pay-as-ask"
    ok = clear(m)
    assert ok.stats.limits_hit == () and ok.audit.ok and ok.prices
    assert {c.name: c.violations for c in ok.audit.checks}["prices"] == 0


def test_limits_hit_round_trips_through_json() -> None:
    from matching.model import ClearingResult

    r = clear(generate("windows", 400, 60, 1), time_limit=1e-9)
    back = ClearingResult.from_json(r.to_json())
    assert back.stats.limits_hit == r.stats.limits_hit and back.canonical_json() == r.canonical_json()
