"""RFC 8785 canonical JSON: the reference test data and properties."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.canonical import canonical_bytes, canonical_hash
from federation.errors import CanonicalizationError
from tests.federation.conftest import VECTORS

JCS = VECTORS / "jcs"
CASES = sorted(p.stem for p in (JCS / "input").glob("*.json"))


def test_all_reference_files_present() -> None:
    assert len(CASES) >= 6


@pytest.mark.parametrize("name", CASES)
def test_reference_vector(name: str) -> None:
    data = json.loads((JCS / "input" / f"{name}.json").read_text(encoding="utf-8"))
    expected = (JCS / "output" / f"{name}.json").read_bytes()
    assert canonical_bytes(data) == expected
    hex_text = (JCS / "outhex" / f"{name}.txt").read_text().split()
    assert canonical_bytes(data) == bytes(int(h, 16) for h in hex_text)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: "x"}, {"a": b"bytes"}, 2**60, {"a": object()}])
def test_refuses_non_json(bad: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_bytes(bad)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(min_value=-1e15, max_value=1e15)  # integral floats >= 2**53 re-parse as unsafe ints
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None)
@given(json_values)
def test_idempotent_and_order_independent(value: object) -> None:
    once = canonical_bytes(value)
    assert canonical_bytes(json.loads(once)) == once
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
        assert canonical_bytes(reordered) == once
    assert canonical_hash(value) == hashlib.sha256(once).hexdigest()


def test_money_is_exact_int() -> None:
    assert canonical_bytes({"b": 1, "a": 123456789012345}) == b'{"a":123456789012345,"b":1}'
    assert Path(JCS / "SOURCE.md").exists()
