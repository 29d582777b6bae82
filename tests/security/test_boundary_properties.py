"""The bounded JSON parser (exchange.api.boundary) on hypothesis-generated hostile strings and shapes:
any control character anywhere (value or key, any depth) is refused naming where; clean text is accepted
unchanged; nesting beyond the cap and integers beyond 2^53 - 1 are refused; nothing raises anything but the
boundary's own 400 errors, whatever the bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.api.boundary import (
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    BadCharacterError,
    BodyTooDeepError,
    JsonIntegerRangeError,
    MalformedInputError,
    load_json,
)
from exchange.api.parsing import ascii_int
from exchange.api.problems import status_for
from identifiers.errors import ValidationError

CONTROL = st.sampled_from([chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]])
NO_CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]
CLEAN = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=NO_CONTROL))


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Clean text with at least one control character inserted somewhere."""
    text = draw(CLEAN)
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(CONTROL) + text[at:]


def nest(value: Any, path: list[str | int]) -> Any:
    """`value` placed at `path` inside objects/arrays."""
    for p in reversed(path):
        value = [value] if isinstance(p, int) else {p: value}
    return value


PATHS = st.lists(st.one_of(st.just(0), CLEAN.filter(bool)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(bad=hostile_text(), path=PATHS, in_key=st.booleans())
def test_a_control_character_anywhere_is_refused(bad: str, path: list[str | int], in_key: bool) -> None:
    doc = nest({bad: 1} if in_key else bad, path)
    with pytest.raises(BadCharacterError) as info:
        load_json(json.dumps(doc).encode())
    assert status_for(info.value) == 400 and info.value.field is not None


@settings(max_examples=150, deadline=None)
@given(text=CLEAN, path=PATHS)
def test_clean_text_is_accepted_unchanged(text: str, path: list[str | int]) -> None:
    doc = nest({"t": text, "tab": "a\tb\nc"}, path)
    assert load_json(json.dumps(doc, ensure_ascii=False).encode()) == doc


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(MAX_JSON_DEPTH + 1, 5000), array=st.booleans())
def test_nesting_beyond_the_cap_is_refused(depth: int, array: bool) -> None:
    raw = (b"[" * depth + b"]" * depth) if array else (b'{"a":' * depth + b"1" + b"}" * depth)
    with pytest.raises(BodyTooDeepError):
        load_json(raw)


def test_nesting_at_the_cap_is_accepted() -> None:
    depth = MAX_JSON_DEPTH
    assert load_json(b"[" * depth + b"]" * depth) is not None


@settings(max_examples=100, deadline=None)
@given(n=st.one_of(st.integers(MAX_JSON_INT + 1, 2**200), st.integers(-(2**200), -MAX_JSON_INT - 1)), path=PATHS)
def test_integers_beyond_2_53_are_refused(n: int, path: list[str | int]) -> None:
    with pytest.raises(JsonIntegerRangeError):
        load_json(json.dumps(nest(n, path)).encode())


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_as_400(raw: bytes) -> None:
    try:
        load_json(raw)
    except MalformedInputError as exc:
        assert status_for(exc) == 400


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=25), st.from_regex(r"\A[0-9]{1,20}\Z")))
def test_path_and_query_ints_are_ascii_digits_only(text: str) -> None:
    try:
        value = ascii_int(text, "n")
    except ValidationError:
        in_range = text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_JSON_INT
        assert not in_range  # refused: Unicode digits, signs, spaces, `_`, empty, or too large
    else:
        assert text.isascii() and text.isdigit() and value == int(text)
