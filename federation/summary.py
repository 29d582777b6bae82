"""Supply summaries a member sends its hub (pure): per (region, model), free devices by time slot as an
ask ladder, i.e. a supply curve per slot rather than one price, with the model facts eligibility needs.

Wire form (`specs/supply-summary.schema.json`), signed as a DSSE envelope by the origin's exchange key
(payload type `application/vnd.hetex.supply-summary+json`). A hub that peers with a parent hub sends
the aggregate of its members' summaries under its own authority (`aggregate`), `via` listing the
members it covers, so the parent routes holds to the hub, which re-clears them on its members' curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from federation.dsse import record_payload_type, sign_json_envelope, verify_json_envelope
from federation.errors import EnvelopeError
from federation.keys import Keyring, SigningKey
from identifiers.errors import AuthenticationError, ValidationError

FORMAT = "hetex.supply-summary/1"
PAYLOAD_TYPE = record_payload_type("supply-summary")
MAX_CLASSES = 2000
MAX_SLOTS = 48
MAX_STEPS = 64
# ladder steps in one summary: what a hub keeps per member (newest summary only), so a member cannot grow
# the hub's memory past this whatever its classes x slots x steps (a regional hub's aggregate included)
MAX_TOTAL_STEPS = 50_000


class SupplySummaryError(AuthenticationError):
    """A supply summary that is unsigned, signed by the wrong key, malformed, or expired."""

    code = "supply_summary_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True)
class SlotSupply:
    """Free devices of a class in one slot, as an ascending ask ladder ((ask fen/device-hour, devices), ...)."""

    start: int
    ladder: tuple[tuple[int, int], ...]

    def devices(self) -> int:
        """All free devices in the slot."""
        return sum(n for _, n in self.ladder)


@dataclass(frozen=True)
class SupplyClass:
    """One (region, model) class: model facts, the largest single pool free, and per-slot ladders."""

    region: str
    model: str
    family: str
    memory_gb: int
    scu: Decimal | None
    stack: str
    domestic: bool
    max_pool_free: int
    slots: tuple[SlotSupply, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (money integers, SCU a decimal string)."""
        return {
            "region": self.region,
            "model": self.model,
            "family": self.family,
            "memory_gb": self.memory_gb,
            "scu": None if self.scu is None else str(self.scu),
            "stack": self.stack,
            "domestic": self.domestic,
            "max_pool_free": self.max_pool_free,
            "slots": [{"start": s.start, "ladder": [[a, n] for a, n in s.ladder]} for s in self.slots],
        }


@dataclass(frozen=True)
class SupplySummary:
    """A versioned, expiring statement by one exchange (or hub, for its members) of its supply curves."""

    origin_authority: str
    version: int
    issued_at: int
    expires_at: int
    slot_seconds: int
    classes: tuple[SupplyClass, ...]
    via: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (the signed payload)."""
        return {
            "type": "supply_summary",
            "format": FORMAT,
            "origin_authority": self.origin_authority,
            "version": self.version,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "slot_seconds": self.slot_seconds,
            "via": list(self.via),
            "classes": [c.to_json() for c in self.classes],
        }


def _int(data: Mapping[str, Any], name: str, lo: int = 0) -> int:
    v = data.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValidationError(f"{name} must be an integer >= {lo}", field=name)
    return v


def _str(data: Mapping[str, Any], name: str) -> str:
    v = data.get(name)
    if not isinstance(v, str) or not 0 < len(v) <= 64:
        raise ValidationError(f"{name} must be a string of 1-64 characters", field=name)
    return v


def _class_from_json(c: Any, slot_seconds: int) -> SupplyClass:
    if not isinstance(c, dict):
        raise ValidationError("a class must be an object", field="classes")
    scu_text = c.get("scu")
    scu: Decimal | None = None
    if scu_text is not None:
        try:
            scu = Decimal(str(scu_text)) if isinstance(scu_text, str) else None
        except InvalidOperation:
            scu = None
        if scu is None or not scu.is_finite() or scu <= 0:
            raise ValidationError("scu must be a positive decimal string or null", field="scu")
    if not isinstance(c.get("domestic"), bool):
        raise ValidationError("domestic must be a boolean", field="domestic")
    raw_slots = c.get("slots")
    if not isinstance(raw_slots, list) or len(raw_slots) > MAX_SLOTS:
        raise ValidationError(f"slots must be a list of at most {MAX_SLOTS}", field="slots")
    slots = []
    last_start = None
    for s in raw_slots:
        if not isinstance(s, dict):
            raise ValidationError("a slot must be an object", field="slots")
        start = _int(s, "start")
        if start % slot_seconds or (last_start is not None and start <= last_start):
            raise ValidationError("slot starts must be ascending multiples of slot_seconds", field="start")
        last_start = start
        ladder = s.get("ladder")
        if not isinstance(ladder, list) or len(ladder) > MAX_STEPS:
            raise ValidationError(f"ladder must be a list of at most {MAX_STEPS} steps", field="ladder")
        steps = []
        for step in ladder:
            ok = isinstance(step, list) and len(step) == 2
            ok = ok and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in step)
            if not ok:
                raise ValidationError("a ladder step is [ask_fen, devices], both positive integers", field="ladder")
            steps.append((int(step[0]), int(step[1])))
        if [a for a, _ in steps] != sorted({a for a, _ in steps}):
            raise ValidationError("ladder asks must be strictly ascending", field="ladder")
        slots.append(SlotSupply(start, tuple(steps)))
    return SupplyClass(
        region=_str(c, "region"),
        model=_str(c, "model"),
        family=_str(c, "family"),
        memory_gb=_int(c, "memory_gb"),
        scu=scu,
        stack=_str(c, "stack"),
        domestic=bool(c["domestic"]),
        max_pool_free=_int(c, "max_pool_free"),
        slots=tuple(slots),
    )


def summary_from_json(data: Any) -> SupplySummary:
    """Parse and check a supply summary payload (ValidationError naming the field)."""
    if not isinstance(data, dict) or data.get("type") != "supply_summary" or data.get("format") != FORMAT:
        raise ValidationError(f"not a {FORMAT} supply summary", field="format")
    slot_seconds = _int(data, "slot_seconds", 60)
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
        raise ValidationError(f"classes must be a list of at most {MAX_CLASSES}", field="classes")
    via = data.get("via", [])
    if not isinstance(via, list) or not all(isinstance(v, str) and 0 < len(v) <= 8 for v in via):
        raise ValidationError("via must be a list of authority codes", field="via")
    issued = _int(data, "issued_at")
    expires = _int(data, "expires_at")
    if expires <= issued:
        raise ValidationError("expires_at must be after issued_at", field="expires_at")
    parsed = tuple(_class_from_json(c, slot_seconds) for c in classes)
    if sum(len(s.ladder) for c in parsed for s in c.slots) > MAX_TOTAL_STEPS:
        raise ValidationError(f"a summary holds at most {MAX_TOTAL_STEPS} ladder steps in all", field="classes")
    keys = [(c.region, c.model) for c in parsed]
    if len(set(keys)) != len(keys):
        raise ValidationError("one class per (region, model)", field="classes")
    return SupplySummary(
        origin_authority=_str(data, "origin_authority"),
        version=_int(data, "version", 1),
        issued_at=issued,
        expires_at=expires,
        slot_seconds=slot_seconds,
        classes=parsed,
        via=tuple(via),
    )


def sign_supply_summary(summary: SupplySummary, key_id: str, key: SigningKey) -> dict[str, Any]:
    """The DSSE envelope of a supply summary, signed by its origin's exchange key."""
    return sign_json_envelope(PAYLOAD_TYPE, summary.to_json(), [(key_id, key)])


def verify_supply_summary(envelope: Any, origin_authority: str, ring: Keyring, *, now: int) -> SupplySummary:
    """The summary if signed by a key of `ring`, naming `origin_authority` and not expired."""
    if not isinstance(envelope, dict) or not envelope.get("signatures"):
        raise SupplySummaryError("unsigned", "a supply summary must be a signed DSSE envelope")
    try:
        data = verify_json_envelope(envelope, ring, payload_type=PAYLOAD_TYPE)
    except EnvelopeError as exc:
        raise SupplySummaryError("bad_signature", f"supply summary signature refused: {exc.message}") from None
    try:
        summary = summary_from_json(data)
    except ValidationError as exc:
        raise SupplySummaryError("malformed", f"supply summary payload: {exc.message}") from None
    if summary.origin_authority != origin_authority:
        raise SupplySummaryError("wrong_origin", f"summary names {summary.origin_authority}, not {origin_authority}")
    if summary.expires_at <= now:
        raise SupplySummaryError("expired", f"supply summary expired at {summary.expires_at}")
    return summary


def aggregate(
    origin_authority: str, summaries: Iterable[SupplySummary], *, version: int, issued_at: int, expires_at: int
) -> SupplySummary:
    """A hub's summary for its parent: its members' ladders added per (region, model, slot, ask)."""
    summaries = list(summaries)
    slot_seconds = {s.slot_seconds for s in summaries}
    if len(slot_seconds) > 1:
        raise ValidationError("members' summaries use different slot lengths", field="slot_seconds")
    acc: dict[tuple[str, str], dict[int, dict[int, int]]] = {}
    facts: dict[tuple[str, str], SupplyClass] = {}
    biggest: dict[tuple[str, str], int] = {}
    for s in summaries:
        for c in s.classes:
            key = (c.region, c.model)
            facts.setdefault(key, c)
            biggest[key] = max(biggest.get(key, 0), c.max_pool_free)
            by_slot = acc.setdefault(key, {})
            for slot in c.slots:
                lad = by_slot.setdefault(slot.start, {})
                for a, n in slot.ladder:
                    lad[a] = lad.get(a, 0) + n
    classes = []
    for key in sorted(acc):
        f = facts[key]
        slots = tuple(SlotSupply(t, tuple(sorted(lad.items()))) for t, lad in sorted(acc[key].items()))
        classes.append(
            SupplyClass(f.region, f.model, f.family, f.memory_gb, f.scu, f.stack, f.domestic, biggest[key], slots)
        )
    via = tuple(sorted({a for s in summaries for a in (s.via or (s.origin_authority,))}))
    return SupplySummary(
        origin_authority,
        version,
        issued_at,
        expires_at,
        slot_seconds.pop() if slot_seconds else 3600,
        tuple(classes),
        via,
    )
