"""What an audit bundle says about each signed record, and the totals it sums (pure: standard library only).

The exporter and the standalone verifier both use this module, so a total in a manifest is, by
construction, the same function of the signed records that the verifier recomputes. Facts are read only
from the signed payload (plus the bundle's catalogue for a model's family, origin and SCU rating);
anything unsigned is never trusted. specs/audit-verifier.md lists the fields read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any

FORMAT = "hetex-audit-bundle/1"
UNKNOWN = "unknown"
PAYLOAD_TYPE_PREFIX = "application/vnd.hetex."
PAYLOAD_TYPE_SUFFIX = "+json"
MONEY_KINDS = frozenset({"settlement"})
SCU_PLACES = Decimal("0.000001")
_CTX = Context(prec=60)
#: A decimal field at or above this is ignored (not stated): totals stay exact within _CTX, never overflow.
MAX_DECIMAL = Decimal(10) ** 15

# Field names read from a payload, first present wins; each is also looked up inside the nested
# objects named in NESTED (a settlement may carry its contract's facts under "contract").
FIELDS: dict[str, tuple[str, ...]] = {
    "at": ("at", "settled_at", "issued_at", "created_at", "period_end", "end_at"),
    "pool_cri": ("pool_cri", "pool", "cri"),
    "region": ("provider_region", "region"),
    "operator": ("operator", "operator_code"),
    "model": ("model",),
    "family": ("model_family", "family"),
    "domestic": ("domestic",),
    "buyer_region": ("buyer_region", "buyer_home_region", "home_region"),
    "billing_mode": ("billing_mode",),
    "amount_fen": ("buyer_debit_fen", "amount_fen", "total_fen"),
    "scu_hours": ("scu_hours",),
    "device_hours": ("device_hours",),
    "device_minutes": ("device_minutes",),
    "contract_id": ("contract_id",),
}
#: A contract record is known by its contract_id (or id): later records of the same bundle that name it
#: inherit the facts they do not state themselves (region, operator, model, family, origin, buyer region,
#: billing mode). Only contracts earlier in the same bundle count, so exporter and verifier agree.
CONTRACT_KINDS = frozenset({"contract"})
INHERITED = ("region", "operator", "model", "family", "domestic", "buyer_region", "billing_mode")
NESTED = ("contract", "audit")
FILTER_KEYS = ("from", "to", "region", "operator", "model_family")


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """The audit dimensions of one record; None when the signed payload does not say."""

    kind: str
    at: int | None
    region: str | None
    operator: str | None
    model: str | None
    family: str | None
    domestic: bool | None
    buyer_region: str | None
    billing_mode: str | None
    amount_fen: int
    scu_hours: Decimal

    @property
    def counts_money(self) -> bool:
        """True when this record carries settled money and SCU-hours into the totals."""
        return self.kind in MONEY_KINDS


class FactsError(ValueError):
    """The record is not a readable hetex envelope (not JSON, bad base64, wrong payload type)."""


def kind_of(payload_type: str) -> str:
    """'application/vnd.hetex.settlement+json' -> 'settlement'; raise FactsError for anything else."""
    if not (payload_type.startswith(PAYLOAD_TYPE_PREFIX) and payload_type.endswith(PAYLOAD_TYPE_SUFFIX)):
        raise FactsError(f"payload type {payload_type!r} is not a hetex record type")
    kind = payload_type[len(PAYLOAD_TYPE_PREFIX) : -len(PAYLOAD_TYPE_SUFFIX)]
    if not kind:
        raise FactsError("empty record kind")
    return kind


def decode_payload(envelope: Mapping[str, Any]) -> tuple[str, bytes, Any]:
    """(kind, payload bytes, parsed payload) of a DSSE envelope, without checking signatures."""
    ptype = envelope.get("payloadType")
    raw = envelope.get("payload")
    if not isinstance(ptype, str) or not isinstance(raw, str):
        raise FactsError("envelope lacks payloadType or payload")
    try:
        std = raw.replace("-", "+").replace("_", "/")
        data = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
        obj = json.loads(data)
    except (binascii.Error, ValueError) as exc:
        raise FactsError("payload is not base64 JSON") from exc
    if not isinstance(obj, dict):
        raise FactsError("payload is not a JSON object")
    return kind_of(ptype), data, obj


def _lookup(payload: Mapping[str, Any], name: str) -> Any:
    for key in FIELDS[name]:
        if key in payload and payload[key] is not None:
            return payload[key]
    for nest in NESTED:
        inner = payload.get(nest)
        if isinstance(inner, Mapping):
            for key in FIELDS[name]:
                if key in inner and inner[key] is not None:
                    return inner[key]
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            return None
        return d if d.is_finite() and abs(d) < MAX_DECIMAL else None
    return None


def cri_parts(cri: str) -> dict[str, str]:
    """Region, operator and model of a pool CRI `CRI1:AUTH:REGION:OP:SITE:POOL:MODEL:CHECK` (no check)."""
    parts = cri.split(":")
    out: dict[str, str] = {}
    if len(parts) >= 5 and parts[0] == "CRI1":
        out["region"], out["operator"] = parts[2], parts[3]
        if len(parts) == 8:
            out["model"] = parts[6]
    return out


def contract_key(kind: str, payload: Mapping[str, Any]) -> str | None:
    """The id under which a contract record's facts are remembered (None for other kinds)."""
    if kind not in CONTRACT_KINDS:
        return None
    return _str(payload.get("contract_id")) or _str(payload.get("id"))


def record_facts(
    kind: str,
    payload: Mapping[str, Any],
    catalogue: Mapping[str, Mapping[str, Any]],
    contracts: Mapping[str, RecordFacts] | None = None,
) -> RecordFacts:
    """The audit facts of one signed payload (catalogue: model code -> {family, domestic, scu}; contracts:
    facts of contract records earlier in the bundle, by contract id)."""
    own = _own_facts(kind, payload, catalogue)
    cid = _str(_lookup(payload, "contract_id"))
    parent = contracts.get(cid) if contracts is not None and cid and kind not in CONTRACT_KINDS else None
    if parent is None:
        return own
    filled = {
        name: getattr(own, name) if getattr(own, name) is not None else getattr(parent, name) for name in INHERITED
    }
    if own.model is None and filled["model"] is not None:
        entry = catalogue.get(filled["model"], {})
        if filled["family"] is None:
            filled["family"] = _str(entry.get("family"))
        if filled["domestic"] is None and isinstance(entry.get("domestic"), bool):
            filled["domestic"] = entry["domestic"]
    scu = own.scu_hours
    if own.counts_money and not scu and filled["model"] is not None:
        scu = _money_scu(payload, catalogue.get(filled["model"], {})) or scu
    return RecordFacts(kind=kind, at=own.at, amount_fen=own.amount_fen, scu_hours=scu, **filled)


def _scu(payload: Mapping[str, Any], entry: Mapping[str, Any]) -> Decimal | None:
    """SCU-hours stated, or device-hours (or device-minutes / 60) x the model's SCU rating."""
    stated = _decimal(_lookup(payload, "scu_hours"))
    if stated is not None:
        return stated
    rating = _decimal(entry.get("scu"))
    hours = _decimal(_lookup(payload, "device_hours"))
    if hours is None:
        minutes = _decimal(_lookup(payload, "device_minutes"))
        hours = None if minutes is None else _CTX.divide(minutes, Decimal(60))
    if hours is None or rating is None:
        return None
    return _CTX.multiply(hours, rating)


def _money_scu(payload: Mapping[str, Any], entry: Mapping[str, Any]) -> Decimal:
    """SCU-hours a money record adds to the totals: a correction adds only its change."""
    scu = _scu(payload, entry) or Decimal(0)
    prior = _superseded(payload)
    if prior is not None:
        scu -= _scu(prior, entry) or Decimal(0)
    return scu


def _superseded(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Figures of the record a correction supersedes (`detail.superseded`), if the payload is one."""
    detail = payload.get("detail")
    prior = detail.get("superseded") if isinstance(detail, Mapping) else None
    return prior if isinstance(prior, Mapping) else None


def _own_facts(kind: str, payload: Mapping[str, Any], catalogue: Mapping[str, Mapping[str, Any]]) -> RecordFacts:
    cri = _str(_lookup(payload, "pool_cri"))
    from_cri = cri_parts(cri) if cri else {}
    model = _str(_lookup(payload, "model")) or from_cri.get("model")
    entry = catalogue.get(model or "", {})
    family = _str(_lookup(payload, "family")) or _str(entry.get("family"))
    domestic = _lookup(payload, "domestic")
    if not isinstance(domestic, bool):
        domestic = entry.get("domestic") if isinstance(entry.get("domestic"), bool) else None
    amount = 0
    scu = Decimal(0)
    if kind in MONEY_KINDS:
        amount = _int(_lookup(payload, "amount_fen")) or 0
        scu = _money_scu(payload, entry)
        prior = _superseded(payload)
        if prior is not None:  # a correction counts only its difference from the record it replaces
            amount -= _int(_lookup(prior, "amount_fen")) or 0
    return RecordFacts(
        kind=kind,
        at=_int(_lookup(payload, "at")),
        region=_str(_lookup(payload, "region")) or from_cri.get("region"),
        operator=_str(_lookup(payload, "operator")) or from_cri.get("operator"),
        model=model,
        family=family,
        domestic=domestic,
        buyer_region=_str(_lookup(payload, "buyer_region")),
        billing_mode=_str(_lookup(payload, "billing_mode")),
        amount_fen=amount,
        scu_hours=scu,
    )


# ---------------------------------------------------------------------------------------------------
# filters


def normalize_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest form of export filters: every key of FILTER_KEYS present, unknown keys refused."""
    extra = set(filters) - set(FILTER_KEYS)
    if extra:
        raise ValueError(f"unknown filter(s): {sorted(extra)}")
    return {k: filters.get(k) for k in FILTER_KEYS}


def filter_violations(facts: RecordFacts, filters: Mapping[str, Any]) -> list[str]:
    """Why a record falls outside the filters (empty list: it is inside).

    Period: from <= at < to. Region: the provider region or the buyer's home region equals it (so a
    region's regulator sees both what ran there and what its buyers bought elsewhere). Operator and
    model family: equal. A filter on a dimension the record does not state is not honoured.
    """
    out: list[str] = []
    lo, hi = filters.get("from"), filters.get("to")
    if lo is not None or hi is not None:
        if facts.at is None:
            out.append("record states no time but the export has a period")
        elif lo is not None and facts.at < lo:
            out.append(f"time {facts.at} is before the period start {lo}")
        elif hi is not None and facts.at >= hi:
            out.append(f"time {facts.at} is not before the period end {hi}")
    region = filters.get("region")
    if region is not None and region not in (facts.region, facts.buyer_region):
        out.append(f"neither provider region {facts.region} nor buyer region {facts.buyer_region} is {region}")
    operator = filters.get("operator")
    if operator is not None and facts.operator != operator:
        out.append(f"operator {facts.operator} is not {operator}")
    family = filters.get("model_family")
    if family is not None and facts.family != family:
        out.append(f"model family {facts.family} is not {family}")
    return out


# ---------------------------------------------------------------------------------------------------
# totals


class _Cell:
    __slots__ = ("fen", "records", "scu")

    def __init__(self) -> None:
        self.records = 0
        self.fen = 0
        self.scu = Decimal(0)

    def add(self, facts: RecordFacts) -> None:
        self.records += 1
        self.fen += facts.amount_fen
        self.scu = _CTX.add(self.scu, facts.scu_hours)

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "fen": self.fen, "scu_hours": format_scu(self.scu)}


def format_scu(value: Decimal) -> str:
    """SCU-hours as a fixed 6-decimal string (rounded half-even only here, at the report)."""
    return str(value.quantize(SCU_PLACES, context=_CTX))


def origin_of(domestic: bool | None) -> str:
    """'domestic', 'imported' or 'unknown' accelerators."""
    return UNKNOWN if domestic is None else ("domestic" if domestic else "imported")


class Totals:
    """Incremental totals: record counts by kind; settled fen and SCU-hours by every dimension."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}
        self.all = _Cell()
        self.by: dict[str, dict[str, _Cell]] = {
            "by_region": {},
            "by_model_family": {},
            "by_billing_mode": {},
            "by_origin": {},
        }
        self.flows: dict[str, dict[str, _Cell]] = {}

    def _cell(self, table: dict[str, _Cell], key: str | None) -> _Cell:
        key = key or UNKNOWN
        cell = table.get(key)
        if cell is None:
            cell = table[key] = _Cell()
        return cell

    def add(self, facts: RecordFacts) -> None:
        """Count one record (money only for settlement records)."""
        self.kinds[facts.kind] = self.kinds.get(facts.kind, 0) + 1
        if not facts.counts_money:
            return
        self.all.add(facts)
        self._cell(self.by["by_region"], facts.region).add(facts)
        self._cell(self.by["by_model_family"], facts.family).add(facts)
        self._cell(self.by["by_billing_mode"], facts.billing_mode).add(facts)
        self._cell(self.by["by_origin"], origin_of(facts.domestic)).add(facts)
        row = self.flows.setdefault(facts.buyer_region or UNKNOWN, {})
        self._cell(row, facts.region).add(facts)

    def to_json(self) -> dict[str, Any]:
        """The manifest `totals` object (keys sorted; SCU-hours as decimal strings)."""
        out: dict[str, Any] = {
            "records_by_kind": dict(sorted(self.kinds.items())),
            "settled": self.all.to_json(),
        }
        for name, table in self.by.items():
            out[name] = {k: table[k].to_json() for k in sorted(table)}
        out["flows"] = {b: {p: row[p].to_json() for p in sorted(row)} for b, row in sorted(self.flows.items())}
        return out


def diff_json(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every path where two JSON values differ, as 'path: manifest X, records Y' lines."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in expected:
                out.append(f"{sub}: missing from the manifest, records give {json.dumps(actual[key])}")
            elif key not in actual:
                out.append(f"{sub}: manifest gives {json.dumps(expected[key])}, records give nothing")
            else:
                out.extend(diff_json(expected[key], actual[key], sub))
        return out
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: manifest {json.dumps(expected)}, records {json.dumps(actual)}"]
    return []


# ---------------------------------------------------------------------------------------------------
# summary.csv (for people; regenerated and compared by the verifier)

SUMMARY_COLUMNS = ("table", "key", "subkey", "records", "fen", "scu_hours")


def summary_rows(totals: Mapping[str, Any]) -> Iterable[tuple[str, ...]]:
    """Rows of summary.csv from a totals object (manifest form)."""
    yield SUMMARY_COLUMNS
    for kind, n in totals.get("records_by_kind", {}).items():
        yield ("records_by_kind", kind, "", str(n), "", "")
    s = totals.get("settled", {})
    yield ("settled", "all", "", str(s.get("records", 0)), str(s.get("fen", 0)), str(s.get("scu_hours", "")))
    for table in ("by_region", "by_model_family", "by_billing_mode", "by_origin"):
        for key, c in totals.get(table, {}).items():
            yield (table, key, "", str(c["records"]), str(c["fen"]), str(c["scu_hours"]))
    for buyer, row in totals.get("flows", {}).items():
        for provider, c in row.items():
            yield ("flows", buyer, provider, str(c["records"]), str(c["fen"]), str(c["scu_hours"]))


def summary_csv(totals: Mapping[str, Any]) -> bytes:
    """summary.csv bytes: RFC 4180 CSV, CRLF line ends, UTF-8 (fields never need quoting here, but are quoted
    when they contain a comma or quote)."""

    def cell(text: str) -> str:
        if any(ch in text for ch in ',"\r\n'):
            return '"' + text.replace('"', '""') + '"'
        return text

    return "".join(",".join(cell(c) for c in row) + "\r\n" for row in summary_rows(totals)).encode("utf-8")
