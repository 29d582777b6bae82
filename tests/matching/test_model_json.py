"""JSON form of snapshots and results: round trip, schema validity, validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from matching.clearing import clear
from matching.errors import MarketError
from matching.generators import generate
from matching.model import ClearingResult, Market

from .markets import markets

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _schema(name: str) -> dict:
    return json.loads((SPECS / name).read_text())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_snapshot_round_trip_and_schema(m: Market) -> None:
    text = m.to_json()
    jsonschema.validate(json.loads(text), _schema("market-snapshot.schema.json"))
    assert Market.from_json(text) == m


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(max_orders=5, max_pools=4))
def test_result_round_trip_and_schema(m: Market) -> None:
    r = clear(m)
    text = r.to_json()
    jsonschema.validate(json.loads(text), _schema("clearing-result.schema.json"))
    assert ClearingResult.from_json(text) == r


def test_generated_snapshot_validates() -> None:
    m = generate("windows", 60, 12, 3)
    jsonschema.validate(json.loads(m.to_json()), _schema("market-snapshot.schema.json"))
    assert Market.from_json(m.to_json()) == m


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"fee_bps": 10000}, "fee_bps"),
        ({"orders": [{"id": "a", "seq": 1, "limits": {"X": 1}}]}, "orders[0]"),
        ({"orders": [{"id": "a", "seq": 1, "quantity_devices": 1, "limits": {}}]}, "orders[0].limits"),
        (
            {"orders": [{"id": "a", "seq": 1, "quantity_devices": 1, "limits": {"X": 1}, "colocation": "rack"}]},
            "orders[0].colocation",
        ),
        ({"format": "other"}, "format"),
    ],
)
def test_bad_snapshots_are_refused(patch: dict, field: str) -> None:
    base = json.loads(generate("scale", 3, 2, 0).to_json())
    base.update(patch)
    with pytest.raises(MarketError) as ei:
        Market.from_json(json.dumps(base))
    assert ei.value.field == field
    assert ei.value.code == "invalid_market"


def test_result_schema_names_every_prices_method() -> None:
    # the schema's enum is the engine's list: a method added to one and not the other fails here
    from matching.prices import PRICES_METHODS

    found = [v for v in _walk(_schema("clearing-result.schema.json")) if isinstance(v, dict) and "prices_method" in v]
    assert found and tuple(found[0]["prices_method"]["enum"]) == PRICES_METHODS


def _walk(node: object) -> list[object]:
    """Every dict and list inside a JSON value, depth first."""
    out: list[object] = [node]
    if isinstance(node, dict):
        for v in node.values():
            out += _walk(v)
    elif isinstance(node, list):
        for v in node:
            out += _walk(v)
    return out
