"""DSSE v1 envelopes (Dead Simple Signing Envelope) for stored signed records (pure: stdlib + cryptography).

An envelope is `{"payload": b64, "payloadType": str, "signatures": [{"keyid": str, "sig": b64}]}`; each
signature is Ed25519 over PAE(payloadType, payload). hetex payloads are RFC 8785 canonical JSON and
payload types are `application/vnd.hetex.<record>+json`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Sequence
from typing import Any

from federation.canonical import canonical_bytes
from federation.errors import CanonicalizationError, EnvelopeError
from federation.keys import Keyring, SigningKey, VerifyKey

_RECORD_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")


def record_payload_type(record: str) -> str:
    """The hetex payload type of a record kind, e.g. 'usage' -> 'application/vnd.hetex.usage+json'."""
    if not _RECORD_NAME.match(record):
        raise ValueError(f"record kind {record!r} must be lowercase letters, digits, '.' or '-'")
    return f"application/vnd.hetex.{record}+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: 'DSSEv1' SP len(type) SP type SP len(payload) SP payload."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, *, what: str) -> bytes:
    """Decode standard or URL-safe base64 (padding optional), as DSSE verifiers must accept both."""
    if not isinstance(text, str):
        raise EnvelopeError("malformed", f"{what} must be a base64 string")
    if ("-" in text or "_" in text) and ("+" in text or "/" in text):
        raise EnvelopeError("malformed", f"{what} mixes standard and URL-safe base64")
    std = text.replace("-", "+").replace("_", "/")
    std += "=" * (-len(std) % 4)
    try:
        return base64.b64decode(std.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise EnvelopeError("malformed", f"{what} is not valid base64") from exc


def sign_envelope(payload_type: str, payload: bytes, signers: Sequence[tuple[str, SigningKey]]) -> dict[str, Any]:
    """Sign `payload` with each (keyid, key) and return the envelope as a JSON-ready dict."""
    if not payload_type:
        raise ValueError("payload type must not be empty")
    if not signers:
        raise ValueError("at least one signer is required")
    message = pae(payload_type, payload)
    return {
        "payload": _b64(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": kid, "sig": _b64(key.sign(message))} for kid, key in signers],
    }


def sign_json_envelope(payload_type: str, obj: Any, signers: Sequence[tuple[str, SigningKey]]) -> dict[str, Any]:
    """Sign the RFC 8785 canonical bytes of `obj` (so the signed bytes are exactly the stored bytes)."""
    return sign_envelope(payload_type, canonical_bytes(obj), signers)


def _parse(envelope: Any) -> tuple[str, bytes, list[tuple[str | None, bytes]]]:
    if not isinstance(envelope, dict):
        raise EnvelopeError("malformed", "an envelope is a JSON object")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise EnvelopeError("malformed", "payloadType must be a non-empty string")
    payload = _unb64(envelope.get("payload"), what="payload")
    raw_sigs = envelope.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise EnvelopeError("malformed", "signatures must be a non-empty list")
    sigs: list[tuple[str | None, bytes]] = []
    for item in raw_sigs:
        if not isinstance(item, dict):
            raise EnvelopeError("malformed", "each signature is a JSON object")
        kid = item.get("keyid")
        if kid is not None and not isinstance(kid, str):
            raise EnvelopeError("malformed", "keyid must be a string")
        sigs.append((kid or None, _unb64(item.get("sig"), what="sig")))
    return payload_type, payload, sigs


def verify_envelope(
    envelope: dict[str, Any],
    keyring: Keyring,
    *,
    payload_type: str | Collection[str] | None = None,
    threshold: int = 1,
    at: int | None = None,
) -> bytes:
    """Return the payload if at least `threshold` distinct trusted keys signed it, else raise EnvelopeError.

    `payload_type` restricts the accepted type(s); `at` (epoch seconds) checks key validity windows.
    A signature without keyid is tried against every trusted key; a key counts once however often it
    signs. Reasons: malformed, wrong_type, bad_signature, unknown_key, threshold_not_met.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    ptype, payload, sigs = _parse(envelope)
    if payload_type is not None:
        allowed = {payload_type} if isinstance(payload_type, str) else set(payload_type)
        if ptype not in allowed:
            raise EnvelopeError("wrong_type", f"payload type {ptype!r} is not accepted", payload_type=ptype)
    message = pae(ptype, payload)
    accepted: set[VerifyKey] = set()
    failed_known = 0
    unknown: list[str] = []
    for kid, sig in sigs:
        if kid is not None:
            key = keyring.lookup(kid, at=at)
            if key is None:
                unknown.append(kid)
                continue
            if key.is_valid(sig, message):
                accepted.add(key)
            else:
                failed_known += 1
            continue
        for entry in keyring.entries(at=at):
            if entry.key.is_valid(sig, message):
                accepted.add(entry.key)
                break
        else:
            unknown.append("")  # no trusted key verifies it: treated as signed by an unknown key
    if len(accepted) >= threshold:
        return payload
    if failed_known:
        raise EnvelopeError("bad_signature", "a signature does not verify", verified=len(accepted))
    if unknown and not accepted:
        raise EnvelopeError("unknown_key", "no signature is by a trusted key", keyids=unknown)
    raise EnvelopeError(
        "threshold_not_met",
        f"{len(accepted)} of {threshold} required trusted signatures",
        verified=len(accepted),
    )


def verify_json_envelope(
    envelope: dict[str, Any],
    keyring: Keyring,
    *,
    payload_type: str | Collection[str] | None = None,
    threshold: int = 1,
    at: int | None = None,
) -> Any:
    """verify_envelope, then parse the payload as JSON and require it to be in RFC 8785 canonical form."""
    payload = verify_envelope(envelope, keyring, payload_type=payload_type, threshold=threshold, at=at)
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise EnvelopeError("malformed", "payload is not JSON") from exc
    try:
        canonical = canonical_bytes(obj)
    except (CanonicalizationError, RecursionError) as exc:
        raise EnvelopeError("malformed", "payload is not canonicalizable JSON") from exc
    if canonical != payload:
        raise EnvelopeError("malformed", "payload is not RFC 8785 canonical JSON")
    return obj


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    """Canonical (RFC 8785) bytes of an envelope, for storage and hashing into the log."""
    return canonical_bytes(envelope)


def envelope_from_bytes(data: bytes) -> dict[str, Any]:
    """Parse stored envelope bytes back to a dict (shape is checked by verify_envelope)."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError("malformed", "envelope is not JSON") from exc
    if not isinstance(obj, dict):
        raise EnvelopeError("malformed", "an envelope is a JSON object")
    return obj
