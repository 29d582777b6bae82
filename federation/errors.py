"""Errors of the trust primitives: each has a stable code; they derive from identifiers.errors.

This module imports only `identifiers.errors` (itself standard library only), so the pure trust
modules (keys, canonical, dsse, note, merkle) stay usable in a standalone verifier.
"""

from __future__ import annotations

from typing import Any, Final

from identifiers.errors import AuthenticationError, ValidationError

#: Reasons an HTTP message signature is refused (the `reason` detail of SignatureError).
SIGNATURE_REASONS: Final = frozenset(
    {
        "signature_missing",
        "signature_malformed",
        "signature_invalid",
        "signature_expired",
        "digest_missing",
        "digest_mismatch",
        "unknown_key",
        "nonce_missing",
        "nonce_replayed",
        "component_missing",
    }
)


class SignatureError(AuthenticationError):
    """An HTTP request signature was refused; `reason` (one of SIGNATURE_REASONS) says why."""

    code = "signature_refused"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        if reason not in SIGNATURE_REASONS:
            raise ValueError(f"unknown signature refusal reason {reason!r}")
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason


class KeyFormatError(ValidationError):
    """A key, key id or verifier key string could not be decoded."""

    code = "invalid_key"


class BadSignatureError(AuthenticationError):
    """An Ed25519 signature does not verify under the given public key."""

    code = "bad_signature"


class CanonicalizationError(ValidationError):
    """A value cannot be written as RFC 8785 canonical JSON (NaN, infinity, huge int, bad type)."""

    code = "not_canonicalizable"


class EnvelopeError(AuthenticationError):
    """A DSSE envelope is malformed, of the wrong type, or not signed by enough trusted keys."""

    code = "envelope_rejected"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason


class NoteError(AuthenticationError):
    """A C2SP signed note or checkpoint is malformed or carries no valid signature by a known key."""

    code = "note_rejected"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason


class ProofError(ValidationError):
    """A Merkle inclusion or consistency proof does not verify (or its arguments are impossible)."""

    code = "proof_invalid"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        super().__init__(message or reason.replace("_", " "), reason=reason, **details)
        self.reason = reason
