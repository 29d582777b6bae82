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

from federation.canonical import canonical_bytes, sorted_dumps_is_canonical


def fast_canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical bytes of `obj` (same result as federation.canonical.canonical_bytes, faster)."""
    if sorted_dumps_is_canonical(obj):
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let the library apply the RFC's rule
            pass
    return canonical_bytes(obj)
