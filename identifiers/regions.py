"""Regions the exchange serves (ISO 3166-2), their hubs and the approximate round-trip latency matrix.

Data lives in specs/regions.yaml (derivation of the matrix: specs/tools/regions_latency.py).
`parse_regions` is pure; `load_regions` reads the packaged file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from identifiers.cri import is_known_region
from identifiers.errors import RegionTableError, UnknownRegionError
from identifiers.specs import specs_dir

SCHEMA = "hetex.regions/1"
ROLES = frozenset({"hub", "demand"})


@dataclass(frozen=True, slots=True)
class Hub:
    """A national computing hub of the East Data, West Compute programme."""

    key: str
    name: str
    name_zh: str | None = None


@dataclass(frozen=True, slots=True)
class Region:
    """One served region: ISO 3166-2 code, hub membership, roles and representative point."""

    code: str
    name: str
    name_zh: str | None
    hub: str | None
    cluster: str | None
    roles: tuple[str, ...]
    city: str
    lat: float
    lon: float

    @property
    def role(self) -> str:
        """Primary role ('hub' or 'demand'): the first listed."""
        return self.roles[0]

    @property
    def is_hub(self) -> bool:
        """True when the region hosts a national data-centre cluster."""
        return "hub" in self.roles

    @property
    def is_demand(self) -> bool:
        """True when the region is a main source of compute demand."""
        return "demand" in self.roles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "code": self.code,
            "name": self.name,
            "name_zh": self.name_zh,
            "hub": self.hub,
            "cluster": self.cluster,
            "roles": list(self.roles),
            "city": self.city,
            "lat": self.lat,
            "lon": self.lon,
        }


@dataclass(frozen=True, slots=True)
class RegionTable:
    """Served regions in file order with a complete, symmetric round-trip latency matrix (ms)."""

    regions: tuple[Region, ...]
    hubs: Mapping[str, Hub]
    latency: Mapping[str, Mapping[str, int]] = field(repr=False)
    derivation: Mapping[str, Any] = field(repr=False)
    _by_code: Mapping[str, Region] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index regions by code."""
        object.__setattr__(self, "_by_code", {r.code: r for r in self.regions})

    def get(self, code: str) -> Region:
        """The region with this code; raises UnknownRegionError."""
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownRegionError(
                f"region {code!r} is not served by this exchange", field="region", region=code
            ) from None

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def codes(self) -> tuple[str, ...]:
        """Region codes in file order."""
        return tuple(r.code for r in self.regions)

    def latency_ms(self, a: str, b: str) -> int:
        """Approximate round-trip time between two regions (the intra-region value when a == b)."""
        self.get(a)
        self.get(b)
        return self.latency[a][b]

    def within_latency(self, home: str, max_ms: int) -> set[str]:
        """Codes of regions whose round trip from `home` is at most `max_ms` (home itself included if so)."""
        self.get(home)
        return {code for code, ms in self.latency[home].items() if ms <= max_ms}

    def by_hub(self, hub: str) -> tuple[Region, ...]:
        """Regions belonging to one hub, in file order."""
        return tuple(r for r in self.regions if r.hub == hub)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the regions API."""
        return {
            "regions": [r.to_dict() for r in self.regions],
            "hubs": {k: {"name": h.name, "name_zh": h.name_zh} for k, h in self.hubs.items()},
            "latency_ms": {a: [self.latency[a][b] for b in self.codes] for a in self.codes},
            "derivation": dict(self.derivation),
        }


def _fail(where: str, field_name: str, problem: str) -> RegionTableError:
    return RegionTableError(f"{where}: field {field_name!r} {problem}", field=field_name, region=where)


def _opt_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise _fail(where, key, "must be a non-empty string or null")
    return value


def _coordinate(raw: Mapping[str, Any], key: str, where: str, limit: float) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not -limit <= value <= limit:
        raise _fail(where, key, f"must be a number within +-{limit}")
    return float(value)


def _region(raw: Any, index: int, hubs: Mapping[str, Hub]) -> Region:
    if not isinstance(raw, Mapping):
        raise RegionTableError(f"regions[{index}] must be a mapping", field="regions")
    code = raw.get("code")
    where = code if isinstance(code, str) else f"regions[{index}]"
    if not isinstance(code, str) or not is_known_region(code):
        raise _fail(where, "code", "must be an ISO 3166-2 subdivision code like CN-SH")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(where, "name", "must be a non-empty string")
    hub = _opt_text(raw, "hub", where)
    if hub is not None and hub not in hubs:
        raise _fail(where, "hub", f"names unknown hub {hub!r}")
    roles = raw.get("roles")
    if (
        not isinstance(roles, list)
        or not roles
        or not all(isinstance(r, str) and r in ROLES for r in roles)
        or len(set(roles)) != len(roles)
    ):
        raise _fail(where, "roles", f"must be a non-empty list drawn from {sorted(ROLES)}")
    if "hub" in roles and hub is None:
        raise _fail(where, "hub", "is required for a hub region")
    city = raw.get("city")
    if not isinstance(city, str) or not city.strip():
        raise _fail(where, "city", "must name the representative point")
    return Region(
        code=code,
        name=name,
        name_zh=_opt_text(raw, "name_zh", where),
        hub=hub,
        cluster=_opt_text(raw, "cluster", where),
        roles=tuple(roles),
        city=city,
        lat=_coordinate(raw, "lat", where, 90),
        lon=_coordinate(raw, "lon", where, 180),
    )


def parse_regions(data: Mapping[str, Any]) -> RegionTable:
    """Validate regions data (as loaded from YAML) and build a RegionTable; raises RegionTableError."""
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        raise RegionTableError(f"regions schema must be {SCHEMA!r}", field="schema")
    derivation = data.get("derivation")
    if not isinstance(derivation, Mapping):
        raise RegionTableError("regions need a derivation block for the latency matrix", field="derivation")
    hubs_raw = data.get("hubs")
    if not isinstance(hubs_raw, Mapping) or not hubs_raw:
        raise RegionTableError("regions need a hubs mapping", field="hubs")
    hubs: dict[str, Hub] = {}
    for key, entry in hubs_raw.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise RegionTableError(f"hub {key!r} needs a name", field="hubs")
        name_zh = entry.get("name_zh")
        hubs[str(key)] = Hub(str(key), entry["name"], name_zh if isinstance(name_zh, str) else None)
    regions_raw = data.get("regions")
    if not isinstance(regions_raw, Sequence) or isinstance(regions_raw, str) or not regions_raw:
        raise RegionTableError("regions need a non-empty regions list", field="regions")
    regions = [_region(raw, i, hubs) for i, raw in enumerate(regions_raw)]
    codes = [r.code for r in regions]
    if len(set(codes)) != len(codes):
        duplicate = next(c for c in codes if codes.count(c) > 1)
        raise _fail(duplicate, "code", "is duplicated")
    matrix_raw = data.get("latency_ms")
    if not isinstance(matrix_raw, Mapping):
        raise RegionTableError("regions need a latency_ms matrix", field="latency_ms")
    missing = [c for c in codes if c not in matrix_raw]
    extra = [c for c in matrix_raw if c not in codes]
    if missing or extra:
        raise RegionTableError(
            f"latency_ms rows must match the regions: missing {missing}, unexpected {extra}",
            field="latency_ms",
        )
    latency: dict[str, dict[str, int]] = {}
    for a in codes:
        row = matrix_raw[a]
        if not isinstance(row, list) or len(row) != len(codes):
            raise _fail(a, "latency_ms", f"row must list {len(codes)} values in region order")
        for b, ms in zip(codes, row, strict=True):
            if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
                raise _fail(a, "latency_ms", f"value towards {b} must be a non-negative integer, got {ms!r}")
        latency[a] = dict(zip(codes, row, strict=True))
    for a in codes:
        for b in codes:
            if latency[a][b] != latency[b][a]:
                raise _fail(a, "latency_ms", f"is not symmetric: {a}->{b} {latency[a][b]} vs {b}->{a} {latency[b][a]}")
            if a != b and latency[a][b] == 0:
                raise _fail(a, "latency_ms", f"towards {b} must be positive")
    return RegionTable(regions=tuple(regions), hubs=hubs, latency=latency, derivation=dict(derivation))


def _read_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@lru_cache(maxsize=1)
def _default_regions() -> RegionTable:
    return parse_regions(_read_yaml(specs_dir() / "regions.yaml"))


def load_regions(path: Path | None = None) -> RegionTable:
    """Load the region table from `path`, or the packaged specs/regions.yaml (cached)."""
    if path is None:
        return _default_regions()
    return parse_regions(_read_yaml(Path(path)))
