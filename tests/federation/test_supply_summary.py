"""Supply summaries (federation.summary): JSON form against specs/supply-summary.schema.json, signatures,
refusals naming the field, and a hub's aggregate of its members' curves."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.keys import Keyring, SigningKey
from federation.summary import (
    SlotSupply,
    SupplyClass,
    SupplySummary,
    SupplySummaryError,
    aggregate,
    sign_supply_summary,
    summary_from_json,
    verify_supply_summary,
)
from identifiers.errors import ValidationError

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "specs" / "supply-summary.schema.json").read_text())
T0 = 1_767_225_600


@st.composite
def ladders(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    asks = sorted(draw(st.sets(st.integers(1, 10_000), max_size=6)))
    return tuple((a, draw(st.integers(1, 64))) for a in asks)


@st.composite
def classes(draw: st.DrawFn, region: str, model: str) -> SupplyClass:
    n = draw(st.integers(0, 5))
    slots = tuple(SlotSupply(T0 + k * 3600, draw(ladders())) for k in range(n))
    scu = draw(st.one_of(st.none(), st.decimals(Decimal("0.01"), Decimal("10"), places=2)))
    return SupplyClass(region, model, "hopper", 80, scu, "CUDA", draw(st.booleans()), draw(st.integers(0, 64)), slots)


@st.composite
def summaries(draw: st.DrawFn, origin: str = "X1") -> SupplySummary:
    keys = draw(
        st.sets(st.tuples(st.sampled_from(["CN-SH", "CN-NM", "CN-GZ"]), st.sampled_from(["A", "B"])), max_size=4)
    )
    cs = tuple(draw(classes(r, m)) for r, m in sorted(keys))
    return SupplySummary(origin, draw(st.integers(1, 10**6)), T0, T0 + 60, 3600, cs)


@settings(deadline=None, max_examples=60)
@given(summaries())
def test_json_form_round_trips_and_matches_the_schema(s: SupplySummary) -> None:
    data = json.loads(json.dumps(s.to_json()))
    jsonschema.validate(data, SCHEMA)
    assert summary_from_json(data) == s


def test_signed_summary_verifies_and_tampering_is_refused() -> None:
    key = SigningKey.generate()
    ring = Keyring()
    kid = ring.add_named("x1.test/log", key.public, owner="X1").key_id
    s = SupplySummary(
        "X1",
        3,
        T0,
        T0 + 60,
        3600,
        (SupplyClass("CN-NM", "A", "f", 64, None, "S", True, 8, (SlotSupply(T0, ((900, 8),)),)),),
    )
    env = sign_supply_summary(s, kid, key)
    assert verify_supply_summary(env, "X1", ring, now=T0) == s
    with pytest.raises(SupplySummaryError) as exc:
        verify_supply_summary(env, "X2", ring, now=T0)
    assert exc.value.details["reason"] == "wrong_origin"
    with pytest.raises(SupplySummaryError) as exc:
        verify_supply_summary(env, "X1", ring, now=T0 + 61)
    assert exc.value.details["reason"] == "expired"
    forged = sign_supply_summary(s, kid, SigningKey.generate())
    with pytest.raises(SupplySummaryError) as exc:
        verify_supply_summary(forged, "X1", ring, now=T0)
    assert exc.value.details["reason"] == "bad_signature"
    with pytest.raises(SupplySummaryError) as exc:
        verify_supply_summary({"payload": env["payload"], "payloadType": env["payloadType"]}, "X1", ring, now=T0)
    assert exc.value.details["reason"] == "unsigned"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("slot_seconds",), 10, "slot_seconds"),
        (("classes", 0, "slots", 0, "ladder"), [[900, 4], [800, 4]], "ladder"),
        (("classes", 0, "slots", 0, "ladder"), [[900, 0]], "ladder"),
        (("classes", 0, "slots", 0, "start"), T0 + 1, "start"),
        (("classes", 0, "scu"), "-1", "scu"),
        (("classes", 0, "domestic"), "yes", "domestic"),
        (("expires_at",), T0 - 1, "expires_at"),
        (("format",), "hetex.supply-summary/0", "format"),
    ],
)
def test_malformed_summary_names_the_field(path: tuple[object, ...], value: object, field: str) -> None:
    s = SupplySummary(
        "X1",
        1,
        T0,
        T0 + 60,
        3600,
        (SupplyClass("CN-NM", "A", "f", 64, Decimal("1.5"), "S", True, 8, (SlotSupply(T0, ((900, 8),)),)),),
    )
    data = s.to_json()
    target = data
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ValidationError) as exc:
        summary_from_json(data)
    assert exc.value.field == field


def test_summary_past_the_total_ladder_cap_is_refused() -> None:
    """Each list within its own limit, but classes x slots x steps past what a hub keeps per member."""
    ladder = tuple((100 + i, 1) for i in range(64))
    slots = tuple(SlotSupply(T0 + k * 3600, ladder) for k in range(48))
    many = tuple(SupplyClass(f"R{i}", "A", "f", 64, None, "S", False, 1, slots) for i in range(17))  # 52,224 steps
    with pytest.raises(ValidationError) as exc:
        summary_from_json(SupplySummary("X1", 1, T0, T0 + 60, 3600, many).to_json())
    assert exc.value.field == "classes"
    summary_from_json(SupplySummary("X1", 1, T0, T0 + 60, 3600, many[:16]).to_json())  # 49,152: kept


def test_hub_aggregate_adds_ladders_per_class_slot_and_ask() -> None:
    def one(origin: str, devices: int, ask: int) -> SupplySummary:
        c = SupplyClass(
            "CN-NM",
            "A",
            "f",
            64,
            None,
            "S",
            True,
            devices,
            (SlotSupply(T0, ((ask, devices),)), SlotSupply(T0 + 3600, ((ask, 1),))),
        )
        return SupplySummary(origin, 1, T0, T0 + 60, 3600, (c,))

    agg = aggregate(
        "H1", [one("X1", 8, 900), one("X2", 4, 900), one("X3", 2, 700)], version=5, issued_at=T0, expires_at=T0 + 30
    )
    (c,) = agg.classes
    assert c.slots[0].ladder == ((700, 2), (900, 12))
    assert c.slots[1].ladder == ((700, 1), (900, 2))
    assert c.max_pool_free == 8
    assert agg.via == ("X1", "X2", "X3") and agg.origin_authority == "H1"
    # a regional hub's aggregate aggregates again under the national hub, keeping the members it covers
    top = aggregate("N1", [agg], version=1, issued_at=T0, expires_at=T0 + 30)
    assert top.via == ("X1", "X2", "X3") and top.classes == agg.classes
    jsonschema.validate(top.to_json(), SCHEMA)
