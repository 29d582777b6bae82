"""Audit totals net out corrections: an original settlement plus its correction count as the corrected figure."""

from __future__ import annotations

from decimal import Decimal

from exchange.audit import facts as F

CATALOGUE = {"HW-910B3": {"family": "Ascend-DaVinci", "domestic": True, "scu": "1.0256"}}


def _settlement(debit: int, minutes: int, superseded: dict[str, int] | None = None) -> dict[str, object]:
    detail: dict[str, object] = {"rule": "per_minute"}
    if superseded is not None:
        detail["superseded"] = superseded
    return {
        "contract_id": "c1",
        "model": "HW-910B3",
        "region": "CN-GZ",
        "billing_mode": "per_minute",
        "buyer_debit_fen": debit,
        "device_minutes": minutes,
        "detail": detail,
    }


def test_correction_counts_only_its_difference() -> None:
    original = _settlement(6_000, 600)
    correction = _settlement(9_000, 900, {"buyer_debit_fen": 6_000, "device_minutes": 600})
    totals = F.Totals()
    for payload in (original, correction):
        totals.add(F.record_facts("settlement", payload, CATALOGUE))
    settled = totals.to_json()["settled"]
    assert settled["fen"] == 9_000
    assert Decimal(settled["scu_hours"]) == Decimal("1.0256") * 15  # 900 device-minutes = 15 device-hours


def test_inherited_model_also_nets_scu() -> None:
    contract = F.record_facts("contract", {"contract_id": "c1", "model": "HW-910B3", "region": "CN-GZ"}, CATALOGUE)
    original = {k: v for k, v in _settlement(6_000, 600).items() if k != "model"}
    corr = {
        k: v
        for k, v in _settlement(3_000, 300, {"buyer_debit_fen": 6_000, "device_minutes": 600}).items()
        if k != "model"
    }
    facts = [F.record_facts("settlement", p, CATALOGUE, {"c1": contract}) for p in (original, corr)]
    assert sum(f.amount_fen for f in facts) == 3_000
    assert sum(f.scu_hours for f in facts) == Decimal("1.0256") * 5
