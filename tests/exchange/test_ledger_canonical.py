"""The fast canonical JSON path gives exactly the rfc8785 library's bytes (property test), and the bench runs."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.bench.ledger import run_ledger_bench
from exchange.services.canonical import fast_canonical_bytes
from federation.canonical import canonical_bytes

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


def _library(value: object) -> bytes | None:
    try:
        return canonical_bytes(value)
    except Exception:
        return None


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_fast_path_equals_rfc8785(value: object) -> None:
    expected = _library(value)
    if expected is None:
        return  # the library refuses it (e.g. a huge int); the fast path then raises too
    assert fast_canonical_bytes(value) == expected


def test_fast_path_on_edge_strings() -> None:
    for s in ["\u2028\u2029", "\x7f", '\x00\x1f\b\f\n\r\t"\\', "\ud800", "😀", "é"]:
        for value in ({"k": s}, {s: 1, "a": [s]}, [s]):
            expected = _library(value)
            if expected is not None:
                assert fast_canonical_bytes(value) == expected, value


async def test_bench_ledger_smoke() -> None:
    result = await run_ledger_bench(records=60, batch=25, single=10, proofs=20)
    assert result["log_size"] == 70
    assert result["append_batched"]["per_s"] > 0 and result["ed25519"]["sign_per_s"] > 0
    assert result["ratios"]["append_batched_to_sign"] > 0
    json.dumps(result)
