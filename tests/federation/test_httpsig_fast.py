"""The signature base of the hetex profile's common case is built without the http-message-signatures library
(federation.httpsig._fast_signature_base); it must be byte for byte the library's, and whatever is not the
common case must still go to the library."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.httpsig import (
    _fast_signature_base,
    _library_signature_base,
    parse_request_signature,
    sign_message,
    sign_request,
    verify_parsed,
)
from federation.keys import SigningKey

KEY = SigningKey.generate()
NOW = 1_700_000_000

URLS = [
    "https://hetex.example/v1/orders",
    "https://hetex.example:8443/prefix/v1/sites/CRI-1/heartbeat",
    "http://127.0.0.1:8080/v1/usage/batch?x=1&y=%20z",
    "https://hetex.example/v1/orders?",
    "https://hetex.example/v1/a%2Fb;c?d=e#f",
    "https://HETEX.example/V1/Orders/..//x",
]

_ALLOWED = list(string.ascii_letters + string.digits + "-._~/;:@!$&'()*+,=")  # RFC 3986 path and query characters
path_chars = st.lists(st.sampled_from([*_ALLOWED, "%20", "%2F", "%7e", "?"]), max_size=40).map("".join)
nonces = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=40)


def _parsed(method: str, url: str, body: bytes, nonce: str, keyid: str = "0a1b2c3d", **kw: object) -> object:
    headers = sign_request(method, url, {}, body, KEY, keyid, created=NOW, nonce=nonce, **kw)  # type: ignore[arg-type]
    return parse_request_signature(method, url, list(headers.items()), now=NOW)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "GET"])
def test_fast_base_is_the_librarys(method: str, url: str) -> None:
    parsed = _parsed(method, url, b'{"a": 1}', "n-1")
    fast = _fast_signature_base(parsed)  # type: ignore[arg-type]
    assert fast is not None and fast == _library_signature_base(parsed)  # type: ignore[arg-type]
    verify_parsed(parsed, b'{"a": 1}', KEY.public)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(path=path_chars, query=path_chars, nonce=nonces, body=st.binary(max_size=64))
def test_fast_base_is_the_librarys_for_any_path_query_and_nonce(path: str, query: str, nonce: str, body: bytes) -> None:
    url = f"https://hetex.example/{path.replace('?', '')}?{query}"
    parsed = _parsed("POST", url, body, nonce)
    assert _fast_signature_base(parsed) == _library_signature_base(parsed)  # type: ignore[arg-type]
    verify_parsed(parsed, body, KEY.public)  # type: ignore[arg-type]


def test_other_shapes_go_to_the_library() -> None:
    """Extra covered components or parameters the profile does not use are not the common case."""
    body = b"{}"
    headers = sign_request("POST", URLS[0], {}, body, KEY, "0a1b2c3d", created=NOW, nonce="n")
    pairs = [*headers.items(), ("Content-Type", "application/json")]
    signed = sign_message(
        "POST",
        URLS[0],
        pairs,
        KEY,
        "0a1b2c3d",
        components=("@method", "@target-uri", "content-digest", "content-type"),
        created=NOW,
        nonce="n",
    )
    pairs = [p for p in pairs if p[0] not in ("Signature-Input", "Signature")]
    pairs += [("Signature-Input", signed.signature_input), ("Signature", signed.signature)]
    parsed = parse_request_signature("POST", URLS[0], pairs, now=NOW)
    assert _fast_signature_base(parsed) is None
    verify_parsed(parsed, body, KEY.public)  # the library path still verifies it
    doubled = [*pairs, ("Content-Digest", headers["Content-Digest"])]  # two field lines: the library joins them
    assert _fast_signature_base(parse_request_signature("POST", URLS[0], doubled, now=NOW)) is None
