"""The same snapshot gives byte-identical results on any machine and under any load: solver limits are
deterministic work limits; a limit that stops a step is named in the result, and a skipped check fails
the audit (bug 2 of issue 15)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from matching.clearing import clear
from matching.generators import generate
from matching.model import ClearingResult, Market


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

    # windows: the time-indexed LP (HiGHS) and the repair's warm re-solves from its basis
    ms = [
        generate("gang", 300, 40, 3),
        generate("nodes", 400, 120, 3),
        generate("gang", 400, 70, 3),
        generate("windows", 600, 100, 2),
    ]
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


def _clear_with_dual_lp(m: Market, time_limit: float) -> ClearingResult:
    """Clear m with prices from the dual LP (a relaxation that returned no row duals), under a work limit."""
    from dataclasses import replace

    from matching.clearing import finalize, run_method
    from matching.eligibility import prepare
    from matching.relaxation import build_network

    prep = prepare(m)
    net = build_network(prep)
    placer, rel, solve = run_method(prep, net, "mcf")
    assert rel is not None and rel.pi is not None  # the LP's own duals are the default prices
    return finalize(prep, net, replace(rel, pi=None, mu=None), placer, "mcf", 0.0, solve, time_limit=time_limit)


def test_price_limit_hit_is_recorded_and_fails_the_audit() -> None:
    m = generate("windows", 400, 60, 1)  # start windows: the time-indexed LP
    r = _clear_with_dual_lp(m, 1e-9)
    assert "prices" in r.stats.limits_hit
    checks = {c.name: c for c in r.audit.checks}
    assert checks["prices"].violations == 1
    assert checks["no_envy"].detail.startswith("not checked")
    assert not r.audit.ok and r.stats.prices_method == "pay-as-ask"
    ok = _clear_with_dual_lp(m, 30.0)
    assert ok.stats.limits_hit == () and ok.audit.ok and ok.prices and ok.stats.prices_method == "dual-lp"
    assert {c.name: c.violations for c in ok.audit.checks}["prices"] == 0
    own = clear(m)  # the LP's minimum duals by a warm re-solve: no second LP, so no price limit to hit
    assert own.stats.prices_method == "lp-min-duals" and own.audit.ok and own.prices
    assert {c.name: c.violations for c in own.audit.checks}["prices"] == 0


def test_limits_hit_round_trips_through_json() -> None:
    r = _clear_with_dual_lp(generate("windows", 400, 60, 1), 1e-9)
    back = ClearingResult.from_json(r.to_json())
    assert back.stats.limits_hit == r.stats.limits_hit and back.canonical_json() == r.canonical_json()
