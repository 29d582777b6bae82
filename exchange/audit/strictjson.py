"""Strict JSON for hostile input: duplicate keys, NaN/Infinity, out-of-range numbers, non-canonical bytes are
named errors (pure: standard library and rfc8785 through federation.canonical)."""

from __future__ import annotations

import json
import math
from typing import Any

from federation.canonical import SAFE_INT, canonical_bytes, sorted_dumps_is_canonical
from federation.errors import CanonicalizationError

#: RFC 7493 (I-JSON) / RFC 8785: integers beyond this are not exact in IEEE 754 and are refused.


class StrictJsonError(ValueError):
    """A JSON text is not acceptable; `code` is the stable reason (json_*)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError("json_duplicate_key", f"object member {key[:64]!r} appears twice")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise StrictJsonError("json_not_finite", f"{name} is not JSON")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(int(text)) > SAFE_INT:
        raise StrictJsonError("json_number_out_of_range", f"integer {text[:32]} is outside +-(2^53 - 1)")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError("json_number_out_of_range", f"number {text[:32]} is out of range")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float, strict=True
)


def loads(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly; raise StrictJsonError naming what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("json_not_utf8", "not UTF-8 text") from None
    try:
        obj, end = _DECODER.raw_decode(text)
    except StrictJsonError:
        raise
    except RecursionError:
        raise StrictJsonError("json_too_deep", "nested too deeply") from None
    except ValueError as exc:
        raise StrictJsonError("json_invalid", f"not JSON: {str(exc)[:120]}") from None
    if text[end:].strip(" \t\r\n"):
        raise StrictJsonError("json_invalid", "data after the JSON value")
    return obj


def canonical(obj: Any) -> bytes:
    """RFC 8785 bytes of a parsed value (fast path when json.dumps gives the same bytes)."""
    if sorted_dumps_is_canonical(obj):
        try:
            return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogate: the library decides
            pass
    return canonical_bytes(obj)


def loads_canonical(data: bytes) -> Any:
    """Parse strictly and require `data` to be exactly the RFC 8785 form of what it parses to."""
    obj = loads(data)
    try:
        same = canonical(obj) == data
    except (CanonicalizationError, RecursionError, ValueError, TypeError):
        same = False
    if not same:
        raise StrictJsonError("json_not_canonical", "not RFC 8785 canonical bytes (a signed document must be)")
    return obj
