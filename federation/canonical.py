"""RFC 8785 (JCS) canonical JSON bytes and their SHA-256: the exact bytes hetex signs and stores.

Numbers: integers must lie within the IEEE 754 safe range (|n| <= 2**53 - 1) and floats must be finite;
RFC 8785 serializes floats by the ECMAScript rules (1.0 -> `1`, 1e21 -> `1e+21`). hetex records carry
money as integer fen and never use floats, so any float in a record is a bug upstream, not here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from federation.errors import CanonicalizationError

#: the IEEE 754 safe-integer range RFC 8785 keeps exact
SAFE_INT = 2**53 - 1


def sorted_dumps_is_canonical(obj: Any) -> bool:
    """True when `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes exactly the
    RFC 8785 bytes (only str/None/bool/safe ints, ASCII keys): the fast path of canonical encoders."""
    if isinstance(obj, str) or obj is None or obj is True or obj is False:
        return True
    if isinstance(obj, int):
        return -SAFE_INT <= obj <= SAFE_INT
    if isinstance(obj, dict):
        return all(isinstance(k, str) and k.isascii() and sorted_dumps_is_canonical(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(sorted_dumps_is_canonical(v) for v in obj)
    return False


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical UTF-8 bytes of a JSON value (dict keys must be str)."""
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise CanonicalizationError(f"not a JSON value: {exc}") from exc


def canonical_hash(obj: Any) -> str:
    """Lowercase hex SHA-256 of canonical_bytes(obj)."""
    return hashlib.sha256(canonical_bytes(obj)).hexdigest()
