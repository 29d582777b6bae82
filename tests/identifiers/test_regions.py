"""Regions: eight hubs covered; latency matrix complete, symmetric and equal to its derivation."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from identifiers.errors import NotFoundError, RegionTableError, UnknownRegionError
from identifiers.regions import RegionTable, load_regions, parse_regions
from identifiers.specs import specs_dir

HUB_REGIONS = {"CN-HE", "CN-AH", "CN-GD", "CN-SC", "CN-CQ", "CN-NM", "CN-GZ", "CN-GS", "CN-NX"}
DEMAND_REGIONS = {"CN-BJ", "CN-TJ", "CN-SH", "CN-JS", "CN-ZJ", "CN-GD"}
TABLE = load_regions()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with (specs_dir() / "regions.yaml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_tool() -> ModuleType:
    path = specs_dir() / "tools" / "regions_latency.py"
    spec = importlib.util.spec_from_file_location("regions_latency", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eight_hubs_and_eastern_demand() -> None:
    assert len(TABLE.hubs) == 8
    assert {r.hub for r in TABLE if r.hub} == set(TABLE.hubs)
    for hub in TABLE.hubs:
        assert any(r.is_hub for r in TABLE.by_hub(hub)), f"hub {hub} has no supply region"
    assert {r.code for r in TABLE if r.is_hub} >= HUB_REGIONS
    assert {r.code for r in TABLE if r.is_demand} >= DEMAND_REGIONS
    assert TABLE.get("CN-GZ").name == "Guizhou"
    assert TABLE.get("CN-NX").role == "hub"


def test_matrix_complete_and_symmetric() -> None:
    codes = TABLE.codes
    for a in codes:
        for b in codes:
            ms = TABLE.latency_ms(a, b)
            assert isinstance(ms, int) and ms > 0
            assert ms == TABLE.latency_ms(b, a)
    diagonal = {TABLE.latency_ms(c, c) for c in codes}
    assert len(diagonal) == 1  # one documented intra-region value


def test_matrix_matches_its_derivation(raw: dict[str, Any]) -> None:
    tool = load_tool()
    expected = tool.compute_matrix(raw)
    assert expected == {a: [TABLE.latency_ms(a, b) for b in TABLE.codes] for a in TABLE.codes}


def test_great_circle_sanity() -> None:
    tool = load_tool()
    # Beijing to Shanghai is about 1,070 km in a straight line.
    beijing, shanghai = TABLE.get("CN-BJ"), TABLE.get("CN-SH")
    km = tool.great_circle_km(beijing.lat, beijing.lon, shanghai.lat, shanghai.lon, 6371)
    assert 1000 < km < 1120
    assert TABLE.latency_ms("CN-BJ", "CN-HE") < TABLE.latency_ms("CN-BJ", "CN-GD")


@given(st.sampled_from(TABLE.codes), st.integers(min_value=0, max_value=60))
def test_within_latency(home: str, max_ms: int) -> None:
    inside = TABLE.within_latency(home, max_ms)
    for code in TABLE.codes:
        assert (code in inside) == (TABLE.latency_ms(home, code) <= max_ms)


def test_within_latency_monotone_and_total() -> None:
    assert TABLE.within_latency("CN-SH", 0) == set()
    assert TABLE.within_latency("CN-SH", 10_000) == set(TABLE.codes)
    assert TABLE.within_latency("CN-SH", 10) <= TABLE.within_latency("CN-SH", 20)


def test_unknown_region() -> None:
    with pytest.raises(UnknownRegionError) as info:
        TABLE.get("CN-XX")
    assert info.value.code == "unknown_region" and isinstance(info.value, NotFoundError)
    with pytest.raises(UnknownRegionError):
        TABLE.latency_ms("CN-SH", "US-CA")
    assert "CN-SH" in TABLE and "US-CA" not in TABLE


def test_load_cached_and_path(tmp_path: Path, raw: dict[str, Any]) -> None:
    assert load_regions() is load_regions()
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    assert isinstance(load_regions(path), RegionTable)
    assert load_regions(path).codes == TABLE.codes


def test_to_dict_round_trips_matrix() -> None:
    body = TABLE.to_dict()
    assert body["derivation"]["approximate"] is True
    assert len(body["latency_ms"]) == len(TABLE)


def test_asymmetric_matrix_is_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["latency_ms"]["CN-BJ"][1] += 1
    with pytest.raises(RegionTableError, match="symmetric"):
        parse_regions(data)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["latency_ms"].pop("CN-NX"), "missing"),
        (lambda d: d["latency_ms"]["CN-BJ"].pop(), "row must list"),
        (lambda d: d["latency_ms"]["CN-BJ"].__setitem__(0, -1), "non-negative"),
        (lambda d: d["regions"][0].__setitem__("code", "CN-QQ"), "ISO 3166-2"),
        (lambda d: d["regions"][0].__setitem__("roles", ["supply"]), "roles"),
        (lambda d: d["regions"][0].__setitem__("hub", "atlantis"), "unknown hub"),
        (lambda d: d["regions"][0].__setitem__("lat", 123), "lat"),
        (lambda d: d["regions"].append(copy.deepcopy(d["regions"][0])), "duplicated"),
        (lambda d: d.__setitem__("schema", "x"), "schema"),
    ],
)
def test_invalid_region_data_is_refused(raw: dict[str, Any], mutate: Any, fragment: str) -> None:
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(RegionTableError) as info:
        parse_regions(data)
    assert fragment in info.value.message
