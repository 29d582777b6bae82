"""Fast RFC 8785 bytes for the common case, falling back to federation.canonical for everything else.

`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes exactly the RFC 8785
bytes when every object key is ASCII (code-point order equals UTF-16 order), there are no floats,
integers are within the IEEE 754 safe range and no string holds a lone surrogate: Python and
ECMAScript escape the same characters (quote, backslash, controls below U+0020, with \\b \\f \\n \\r \\t
short forms and lowercase \\u00xx otherwise). Any other value goes through the `rfc8785` library.
The property test in tests/exchange/test_ledger_canonical.py checks the equality on random values.
"""

from __future__ import annotations

import json
from typing import Any

from federation.canonical import canonical_bytes

SAFE_INT = 2**53 - 1


def _plain(obj: Any) -> bool:
    """True when the fast encoder is known to give RFC 8785 bytes for `obj`."""
    if isinstance(obj, str) or obj is None or obj is True or obj is False:
        return True
    if isinstance(obj, int):
        return -SAFE_INT <= obj <= SAFE_INT
    if isinstance(obj, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return False


def fast_canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical bytes of `obj` (same result as federation.canonical.canonical_bytes, faster)."""
    if _plain(obj):
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let the library apply the RFC's rule
            pass
    return canonical_bytes(obj)
