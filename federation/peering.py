"""Peer-exchange protocol: destination-bound signed messages, capacity summaries and two-party contracts (pure).

Every request one exchange sends another is a JSON message (RFC 8785 bytes on the wire) naming its
type, a message id, the sending and the receiving authority, sent in a request signed with RFC 9421
(hetex profile: @method, @target-uri, content-digest, created, nonce) by the sender's exchange key. The
body names `to_authority` and the signature covers the destination URL, so a message replayed to
another peer fails twice. Capacity summaries and contracts outlive a request: they are DSSE envelopes
(a summary signed by its origin; a cross-exchange contract signed by both exchanges, threshold 2).
No I/O here: the service remembers nonces and message ids, and does the HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.canonical import canonical_bytes
from federation.dsse import record_payload_type, sign_json_envelope, verify_json_envelope
from federation.errors import CanonicalizationError, EnvelopeError
from federation.httpsig import DEFAULT_MAX_SKEW, VerifiedSignature, sign_request, verify_request
from federation.keys import Keyring, SigningKey, VerifyKey, encode_verifier_key, key_id_hex
from identifiers.errors import AuthenticationError, ConflictError, ValidationError
from identifiers.ids import new_id_str

PROTOCOL = "hetex-federation/1"
MESSAGE_TYPES = frozenset(
    {
        "capacity_summary",
        "order_offer",
        "hold_commit",
        "hold_release",
        "mirror",
        # the hub role (specs/federation.md section 9)
        "supply_summary",
        "hub_demand",
        "hub_routes",
    }
)
SUMMARY_PAYLOAD_TYPE = record_payload_type("capacity-summary")
CONTRACT_PAYLOAD_TYPE = record_payload_type("contract")
AUTHORITY_RE = re.compile(r"[A-Z0-9]{1,8}\Z")
MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,80}\Z")

#: Reasons a peer message is refused (the `reason` detail of PeerMessageError), beyond SignatureError's.
PEER_REASONS = frozenset(
    {"malformed_message", "wrong_protocol", "wrong_type", "wrong_sender", "wrong_destination", "stale_message"}
)
#: Reasons a capacity summary is refused.
SUMMARY_REASONS = frozenset({"unsigned", "bad_signature", "malformed", "wrong_origin", "stale_version", "expired"})


class PeerMessageError(AuthenticationError):
    """A peer request is well signed by nobody we trust, or not meant for us; `reason` says which rule."""

    code = "peer_message_refused"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        if reason not in PEER_REASONS:
            raise ValueError(f"unknown peer refusal reason {reason!r}")
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason


class SummaryError(AuthenticationError):
    """A capacity summary is not trusted: unsigned, wrongly signed, from the wrong origin, stale or expired."""

    code = "summary_refused"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        if reason not in SUMMARY_REASONS:
            raise ValueError(f"unknown summary refusal reason {reason!r}")
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason


class StaleSummaryError(ConflictError):
    """A correctly signed summary older than (or as old as) the one already kept; refused, not an attack."""

    code = "summary_stale"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, reason="stale_version", **details)
        self.reason = "stale_version"


class ContractEnvelopeError(AuthenticationError):
    """A cross-exchange contract envelope lacks one of the two exchange signatures or does not verify."""

    code = "contract_signatures"


# --------------------------------------------------------------------------------------------- identities


def check_authority(code: str, field_name: str = "authority") -> str:
    """An authority code (1-8 of A-Z0-9), or ValidationError naming the field."""
    if not isinstance(code, str) or not AUTHORITY_RE.match(code):
        raise ValidationError("authority must be 1-8 characters of A-Z and 0-9", field=field_name)
    return code


@dataclass(frozen=True)
class PeerIdentity:
    """An exchange as its peers know it: authority code, key name (log origin), public key, base URL."""

    authority: str
    origin: str
    public_key: VerifyKey
    url: str | None = None

    @property
    def key_id(self) -> str:
        """C2SP key id (8 hex) of the exchange key under its origin name: the keyid it signs with."""
        return key_id_hex(self.origin, self.public_key)

    @property
    def verifier_key(self) -> str:
        """C2SP verifier key string `<origin>+<hex id>+<base64>` (what checkpoints are verified with)."""
        return encode_verifier_key(self.origin, self.public_key)

    def keyring(self) -> Keyring:
        """A keyring trusting only this exchange's key."""
        ring = Keyring()
        ring.add_named(self.origin, self.public_key, owner=self.authority)
        return ring


@dataclass(frozen=True)
class LocalIdentity:
    """This exchange: its public identity plus the signing key (never serialized)."""

    identity: PeerIdentity
    key: SigningKey = field(repr=False)

    @property
    def authority(self) -> str:
        """Own authority code."""
        return self.identity.authority

    @property
    def key_id(self) -> str:
        """Own key id."""
        return self.identity.key_id


# --------------------------------------------------------------------------------------------- messages


def new_message(
    msg_type: str,
    from_authority: str,
    to_authority: str,
    body: Mapping[str, Any],
    *,
    sent_at: int,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A protocol message addressed to one peer; `message_id` is the idempotency key (fresh if not given)."""
    if msg_type not in MESSAGE_TYPES:
        raise ValueError(f"unknown message type {msg_type!r}")
    return {
        "protocol": PROTOCOL,
        "type": msg_type,
        "message_id": message_id or new_id_str(),
        "from_authority": from_authority,
        "to_authority": to_authority,
        "sent_at": sent_at,
        "body": dict(body),
    }


def sign_peer_request(
    method: str,
    url: str,
    message: Mapping[str, Any],
    me: LocalIdentity,
    *,
    created: int | None = None,
    nonce: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body bytes (canonical JSON) and headers of a signed request carrying `message` to `url`."""
    body = canonical_bytes(dict(message))
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(method, url, headers, body, me.key, me.key_id, created=created, nonce=nonce))
    return body, headers


def sign_peer_get(url: str, me: LocalIdentity, *, created: int | None = None) -> dict[str, str]:
    """Headers of a signed GET (empty body) to a peer: so reads of peer-only data name the caller."""
    return sign_request("GET", url, {}, b"", me.key, me.key_id, created=created)


@dataclass(frozen=True)
class VerifiedPeerMessage:
    """A peer request that passed every check: who sent it, the message, and its signature parameters."""

    peer: PeerIdentity
    message: dict[str, Any]
    signature: VerifiedSignature

    @property
    def type(self) -> str:
        """Message type."""
        return str(self.message["type"])

    @property
    def message_id(self) -> str:
        """Sender-chosen idempotency key."""
        return str(self.message["message_id"])

    @property
    def body(self) -> dict[str, Any]:
        """The type-specific body."""
        body = self.message["body"]
        assert isinstance(body, dict)
        return body


def verify_peer_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    peer_by_key_id: Callable[[str], PeerIdentity | None],
    self_authority: str,
    expected_type: str | Sequence[str] | None = None,
    now: int,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> VerifiedPeerMessage:
    """Verify a peer request: RFC 9421 signature by a known peer key (SignatureError), then the message is
    from that peer, addressed to `self_authority`, of the expected type and fresh (PeerMessageError).
    Nonce replay is the caller's check (it owns the nonce store)."""

    def resolve(keyid: str) -> VerifyKey | None:
        peer = peer_by_key_id(keyid)
        return None if peer is None else peer.public_key

    sig = verify_request(method, url, headers, body, resolve, now=now, max_skew=max_skew)
    peer = peer_by_key_id(sig.keyid)
    assert peer is not None
    message = parse_message(body)
    if message["from_authority"] != peer.authority:
        raise PeerMessageError(
            "wrong_sender", f"message claims to be from {message['from_authority']} but is signed by {peer.authority}"
        )
    if message["to_authority"] != self_authority:
        raise PeerMessageError(
            "wrong_destination", f"message is addressed to {message['to_authority']}, this is {self_authority}"
        )
    if expected_type is not None:
        allowed = {expected_type} if isinstance(expected_type, str) else set(expected_type)
        if message["type"] not in allowed:
            raise PeerMessageError("wrong_type", f"message type {message['type']!r} is not accepted here")
    if abs(now - int(message["sent_at"])) > max_skew:
        raise PeerMessageError("stale_message", f"sent_at is more than {max_skew} s from now")
    return VerifiedPeerMessage(peer, message, sig)


def parse_message(body: bytes) -> dict[str, Any]:
    """Parse and shape-check a protocol message (PeerMessageError on anything malformed)."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PeerMessageError("malformed_message", "body is not JSON") from None
    if not isinstance(message, dict):
        raise PeerMessageError("malformed_message", "a message is a JSON object")
    if message.get("protocol") != PROTOCOL:
        raise PeerMessageError("wrong_protocol", f"protocol must be {PROTOCOL}")
    if message.get("type") not in MESSAGE_TYPES:
        raise PeerMessageError("wrong_type", "unknown message type")
    for name in ("from_authority", "to_authority"):
        value = message.get(name)
        if not isinstance(value, str) or not AUTHORITY_RE.match(value):
            raise PeerMessageError("malformed_message", f"{name} must be an authority code")
    mid = message.get("message_id")
    if not isinstance(mid, str) or not MESSAGE_ID_RE.match(mid):
        raise PeerMessageError("malformed_message", "message_id must be 1-80 of A-Za-z0-9._:-")
    if type(message.get("sent_at")) is not int:
        raise PeerMessageError("malformed_message", "sent_at must be an integer (epoch seconds)")
    if not isinstance(message.get("body"), dict):
        raise PeerMessageError("malformed_message", "body must be a JSON object")
    return message


def message_hash(message: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical message without its transport fields (what a retry must repeat)."""
    import hashlib

    core = {k: v for k, v in message.items() if k != "sent_at"}
    return hashlib.sha256(canonical_bytes(core)).hexdigest()


# --------------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class CapacityClass:
    """Free capacity of one (region, model) class: devices, largest single pool, and the ask ladder."""

    region: str
    model: str
    free_devices: int
    max_pool_free: int
    ask_ladder: tuple[tuple[int, int], ...]  # (ask fen per device-hour, devices offered at that ask), ascending

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "region": self.region,
            "model": self.model,
            "free_devices": self.free_devices,
            "max_pool_free": self.max_pool_free,
            "ask_ladder": [[ask, n] for ask, n in self.ask_ladder],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapacityClass:
        """Parse (raises KeyError/TypeError/ValueError on bad shape; verify_summary maps them)."""
        ladder = tuple((int(a), int(n)) for a, n in data["ask_ladder"])
        return cls(
            str(data["region"]), str(data["model"]), int(data["free_devices"]), int(data["max_pool_free"]), ladder
        )

    def devices_at_or_below(self, limit_fen: int) -> int:
        """Devices offered at an ask not above `limit_fen`."""
        return sum(n for ask, n in self.ask_ladder if ask <= limit_fen)

    @property
    def best_ask(self) -> int | None:
        """Lowest ask in the class, or None when nothing is free."""
        return self.ask_ladder[0][0] if self.ask_ladder else None


@dataclass(frozen=True)
class CapacitySummary:
    """A versioned statement by one exchange of its live free capacity by class."""

    origin_authority: str
    url: str | None
    version: int
    issued_at: int
    expires_at: int
    classes: tuple[CapacityClass, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form (the signed payload)."""
        return {
            "type": "capacity_summary",
            "origin_authority": self.origin_authority,
            "url": self.url,
            "version": self.version,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "classes": [c.to_json() for c in self.classes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapacitySummary:
        """Parse (raises on bad shape)."""
        if data.get("type") != "capacity_summary":
            raise ValueError("not a capacity summary")
        return cls(
            origin_authority=str(data["origin_authority"]),
            url=None if data.get("url") is None else str(data["url"]),
            version=int(data["version"]),
            issued_at=int(data["issued_at"]),
            expires_at=int(data["expires_at"]),
            classes=tuple(CapacityClass.from_json(c) for c in data["classes"]),
        )

    def fillable(self, models: Iterable[str] | None, regions: Iterable[str] | None, limits: Mapping[str, int]) -> int:
        """Devices this summary says could be sold to an order for `models` in `regions` within `limits`
        (fen per device-hour by model code, '*' for any); None means any model / any region."""
        model_set = None if models is None else set(models)
        region_set = None if regions is None else set(regions)
        total = 0
        for c in self.classes:
            if model_set is not None and c.model not in model_set:
                continue
            if region_set is not None and c.region not in region_set:
                continue
            limit = limits.get(c.model, limits.get("*"))
            if limit is None:
                continue
            total += min(c.free_devices, c.devices_at_or_below(limit))
        return total

    def best_ask(self, models: Iterable[str] | None, regions: Iterable[str] | None) -> int | None:
        """Lowest ask among matching classes (for ordering peers), or None."""
        model_set = None if models is None else set(models)
        region_set = None if regions is None else set(regions)
        asks = [
            c.best_ask
            for c in self.classes
            if c.best_ask is not None
            and (model_set is None or c.model in model_set)
            and (region_set is None or c.region in region_set)
        ]
        return min(asks) if asks else None


def sign_summary(summary: CapacitySummary, me: LocalIdentity) -> dict[str, Any]:
    """The DSSE envelope of a summary, signed by this exchange."""
    return sign_json_envelope(SUMMARY_PAYLOAD_TYPE, summary.to_json(), [(me.key_id, me.key)])


def verify_summary(
    envelope: Any, origin: PeerIdentity, *, now: int, last_version: int | None = None
) -> CapacitySummary:
    """The summary if `envelope` is signed by `origin`'s key, names that origin, is newer than
    `last_version` and not expired; else SummaryError (StaleSummaryError for an old version)."""
    if not isinstance(envelope, dict) or not envelope.get("signatures"):
        raise SummaryError("unsigned", "a capacity summary must be a signed DSSE envelope")
    try:
        data = verify_json_envelope(envelope, origin.keyring(), payload_type=SUMMARY_PAYLOAD_TYPE)
    except EnvelopeError as exc:
        reason = "malformed" if exc.details.get("reason") in ("malformed", "wrong_type") else "bad_signature"
        raise SummaryError(reason, f"summary signature refused: {exc.message}") from None
    try:
        summary = CapacitySummary.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SummaryError("malformed", f"summary payload: {exc}") from None
    if summary.origin_authority != origin.authority:
        raise SummaryError("wrong_origin", f"summary names {summary.origin_authority}, signed by {origin.authority}")
    if last_version is not None and summary.version <= last_version:
        raise StaleSummaryError(f"version {summary.version} is not newer than {last_version}", version=summary.version)
    if summary.expires_at <= now:
        raise SummaryError("expired", f"summary expired at {summary.expires_at}")
    return summary


# --------------------------------------------------------------------------------------------- contracts


def sign_contract(body: Mapping[str, Any], me: LocalIdentity) -> dict[str, Any]:
    """A contract envelope signed by this exchange only (the first of the two signatures)."""
    try:
        return sign_json_envelope(CONTRACT_PAYLOAD_TYPE, dict(body), [(me.key_id, me.key)])
    except CanonicalizationError as exc:
        raise ValidationError(f"contract body is not canonical JSON: {exc.message}", field="contract") from None


def countersign_contract(envelope: Mapping[str, Any], me: LocalIdentity) -> dict[str, Any]:
    """`envelope` with this exchange's signature added (an existing signature by the same key is replaced)."""
    own = sign_json_envelope(CONTRACT_PAYLOAD_TYPE, envelope_json(envelope), [(me.key_id, me.key)])
    kept = [s for s in envelope.get("signatures", []) if s.get("keyid") != me.key_id]
    return {
        "payload": envelope["payload"],
        "payloadType": CONTRACT_PAYLOAD_TYPE,
        "signatures": [*kept, *own["signatures"]],
    }


def envelope_json(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON payload of a DSSE envelope, unverified (to compare or countersign what was verified elsewhere)."""
    import base64

    try:
        data = json.loads(base64.b64decode(str(envelope["payload"])))
    except (KeyError, ValueError, TypeError, RecursionError):
        raise ContractEnvelopeError("contract envelope payload is not base64 JSON", reason="malformed") from None
    if not isinstance(data, dict):
        raise ContractEnvelopeError("contract payload must be a JSON object", reason="malformed")
    return data


def verify_contract(
    envelope: Any, first: PeerIdentity, second: PeerIdentity, *, require_both: bool = True
) -> dict[str, Any]:
    """The contract body if `envelope` is signed by both exchanges (or, with require_both=False, by `first`)."""
    ring = first.keyring()
    ring.add_named(second.origin, second.public_key, owner=second.authority)
    threshold = 2 if require_both else 1
    if not require_both:
        ring = first.keyring()
    try:
        data = verify_json_envelope(envelope, ring, payload_type=CONTRACT_PAYLOAD_TYPE, threshold=threshold)
    except EnvelopeError as exc:
        raise ContractEnvelopeError(
            f"contract envelope refused: {exc.message}", reason=exc.details.get("reason")
        ) from None
    if not isinstance(data, dict):
        raise ContractEnvelopeError("contract payload must be a JSON object", reason="malformed")
    return data
