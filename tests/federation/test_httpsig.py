"""RFC 9421 request signatures: the B.2.6 vector, the hetex profile, and every refusal reason."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import SIGNATURE_REASONS, SignatureError
from federation.httpsig import (
    COMPONENTS,
    NonceCache,
    VerifiedSignature,
    _signature_base,
    content_digest,
    parse_request_signature,
    sign_message,
    sign_request,
    verify_request,
)
from federation.keys import SigningKey, VerifyKey
from tests.federation.conftest import VECTORS

B26 = json.loads((VECTORS / "httpsig" / "rfc9421-b26.json").read_text())
B26_KEY = SigningKey.from_der(base64.b64decode(B26["private_key_pkcs8_der_b64"]))

KEY = SigningKey.from_seed(hashlib.sha256(b"httpsig test key").digest())
KEYID = "a1b2c3d4"
URL = "https://exchange.example/v1/orders?dry=1"
BODY = b'{"devices":8}'
NOW = 1_700_000_000


def test_rfc9421_b26_signature_base_and_signature() -> None:
    assert B26_KEY.public == VerifyKey.from_der(base64.b64decode(B26["public_key_spki_der_b64"]))
    signed = sign_message(
        B26["method"],
        B26["url"],
        B26["headers"],
        B26_KEY,
        B26["keyid"],
        components=B26["components"],
        created=B26["created"],
        label=B26["label"],
        include_alg=False,
    )
    assert signed.signature_base == B26["signature_base"].encode()
    assert signed.signature_input == B26["signature_input"]
    assert signed.signature == B26["signature"]


def test_rfc9421_b26_does_not_meet_the_hetex_profile() -> None:
    headers = [*B26["headers"], ("Signature-Input", B26["signature_input"]), ("Signature", B26["signature"])]
    with pytest.raises(SignatureError) as info:
        verify_request("POST", B26["url"], headers, B26["body"].encode(), lambda k: B26_KEY.public, now=B26["created"])
    assert info.value.reason == "nonce_missing"


def test_content_digest() -> None:
    # RFC 9530 appendix example body {"hello": "world"}
    assert content_digest(b'{"hello": "world"}') == (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    )


def _signed(**kw: Any) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request("POST", URL, headers, BODY, KEY, KEYID, created=NOW, nonce="nonce-1", **kw))
    return headers


def _resolve(keyid: str) -> VerifyKey | None:
    return KEY.public if keyid == KEYID else None


def _verify(method: str = "POST", url: str = URL, headers: Any = None, body: bytes = BODY, **kw: Any) -> Any:
    kw.setdefault("now", NOW + 10)
    return verify_request(method, url, _signed() if headers is None else headers, body, _resolve, **kw)


def _reason(**kw: Any) -> str:
    with pytest.raises(SignatureError) as info:
        _verify(**kw)
    assert info.value.code == "signature_refused"
    assert info.value.to_dict()["reason"] == info.value.reason
    return info.value.reason


def test_sign_request_headers() -> None:
    added = sign_request("POST", URL, {}, BODY, KEY, KEYID, created=NOW, nonce="n")
    assert set(added) == {"Content-Digest", "Signature-Input", "Signature"}
    assert added["Content-Digest"] == content_digest(BODY)
    assert added["Signature-Input"] == (
        f'sig1=("@method" "@target-uri" "content-digest");created={NOW};keyid="{KEYID}";alg="ed25519";nonce="n"'
    )
    assert added["Signature"].startswith("sig1=:") and added["Signature"].endswith(":")


def test_verify_ok() -> None:
    assert _verify() == VerifiedSignature(keyid=KEYID, created=NOW, nonce="nonce-1")
    # header names are case-insensitive, and a list of pairs works too
    lowered = [(k.lower(), v) for k, v in _signed().items()]
    assert _verify(headers=lowered).keyid == KEYID
    # empty body
    headers = sign_request("GET", URL, {}, b"", KEY, KEYID, created=NOW, nonce="x")
    assert verify_request("GET", URL, headers, b"", _resolve, now=NOW).nonce == "x"


def test_default_nonce_and_time_are_fresh() -> None:
    a = sign_request("POST", URL, {}, BODY, KEY, KEYID)
    b = sign_request("POST", URL, {}, BODY, KEY, KEYID)
    va, vb = (verify_request("POST", URL, h, BODY, _resolve) for h in (a, b))
    assert va.nonce != vb.nonce and len(va.nonce) >= 16


def _without(*names: str) -> dict[str, str]:
    return {k: v for k, v in _signed().items() if k not in names}


def _with(**changes: str) -> dict[str, str]:
    headers = _signed()
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


def test_signature_missing() -> None:
    assert _reason(headers=_without("Signature")) == "signature_missing"
    assert _reason(headers=_without("Signature-Input")) == "signature_missing"
    assert _reason(headers={}) == "signature_missing"


def test_signature_malformed() -> None:
    sig_input = _signed()["Signature-Input"]
    assert _reason(headers=_with(Signature="sig1=:not base64!:")) == "signature_malformed"
    assert _reason(headers=_with(Signature="other=:AAAA:")) == "signature_malformed"
    assert _reason(headers=_with(Signature_Input=sig_input.replace(';keyid="a1b2c3d4"', ""))) == ("signature_malformed")
    assert _reason(headers=_with(Signature_Input=sig_input.replace(f";created={NOW}", ""))) == ("signature_malformed")
    assert _reason(headers=_with(Signature_Input=sig_input.replace('alg="ed25519"', 'alg="rsa-v1_5-sha256"'))) == (
        "signature_malformed"
    )
    assert _reason(headers=_with(Signature_Input=sig_input + ", sig2=()")) == "signature_malformed"
    assert _reason(headers=_with(Signature_Input="sig1=x")) == "signature_malformed"


def test_signature_invalid() -> None:
    assert _reason(method="PUT") == "signature_invalid"
    assert _reason(url="https://exchange.example/v1/orders?dry=2") == "signature_invalid"
    assert _reason(url="https://evil.example/v1/orders?dry=1") == "signature_invalid"
    # swapping the Content-Digest for one matching a new body breaks the signature
    assert _reason(headers=_with(Content_Digest=content_digest(b"{}")), body=b"{}") == "signature_invalid"
    sig = _signed()["Signature"]
    raw = bytearray(base64.b64decode(sig[len("sig1=:") : -1]))
    raw[0] ^= 1
    assert _reason(headers=_with(Signature="sig1=:" + base64.b64encode(bytes(raw)).decode() + ":")) == (
        "signature_invalid"
    )
    other = sign_request("POST", URL, {}, BODY, SigningKey.generate(), KEYID, created=NOW, nonce="n")
    assert _reason(headers=other) == "signature_invalid"
    # a changed signed parameter (nonce) breaks it too
    sig_input = _signed()["Signature-Input"]
    assert _reason(headers=_with(Signature_Input=sig_input.replace("nonce-1", "nonce-2"))) == "signature_invalid"


def test_signature_expired() -> None:
    assert _verify(now=NOW + 300).created == NOW
    assert _verify(now=NOW - 300).created == NOW
    assert _reason(now=NOW + 301) == "signature_expired"
    assert _reason(now=NOW - 301) == "signature_expired"
    assert _reason(now=NOW + 61, max_skew=60) == "signature_expired"


def test_digest_reasons() -> None:
    assert _reason(body=b'{"devices":9}') == "digest_mismatch"
    assert _reason(headers=_without("Content-Digest")) == "digest_missing"


def test_digest_without_sha512() -> None:
    sha256 = "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":"
    headers = {"Content-Digest": sha256}
    signed = sign_message(
        "POST",
        URL,
        headers,
        KEY,
        KEYID,
        components=("@method", "@target-uri", "content-digest"),
        created=NOW,
        nonce="n",
    )
    headers.update({"Signature-Input": signed.signature_input, "Signature": signed.signature})
    assert _reason(headers=headers) == "digest_missing"


def test_unknown_key() -> None:
    other = sign_request("POST", URL, {}, BODY, KEY, "someone-else", created=NOW, nonce="n")
    assert _reason(headers=other) == "unknown_key"


def test_nonce_missing() -> None:
    sig_input = _signed()["Signature-Input"]
    assert _reason(headers=_with(Signature_Input=sig_input.replace(';nonce="nonce-1"', ""))) == "nonce_missing"


@pytest.mark.parametrize(
    "components",
    [
        ("@method", "content-digest"),
        ("@target-uri", "content-digest"),
        ("@method", "@target-uri"),
        ("@method", "@authority", "@path", "content-digest"),
    ],
)
def test_component_missing(components: tuple[str, ...]) -> None:
    headers = {"Content-Digest": content_digest(BODY)}
    signed = sign_message("POST", URL, headers, KEY, KEYID, components=components, created=NOW, nonce="n")
    headers.update({"Signature-Input": signed.signature_input, "Signature": signed.signature})
    assert _reason(headers=headers) == "component_missing"


def test_nonce_replayed() -> None:
    cache = NonceCache(ttl=300)
    _verify(nonce_cache=cache)
    assert _reason(nonce_cache=cache) == "nonce_replayed"
    # a fresh nonce is fine; the same nonce from another key is fine
    fresh = {"Content-Type": "application/json"}
    fresh.update(sign_request("POST", URL, fresh, BODY, KEY, KEYID, created=NOW, nonce="nonce-2"))
    _verify(headers=fresh, nonce_cache=cache)
    cache.check_and_remember("other-key", "nonce-1", NOW, NOW)


def test_nonce_cache_expiry_and_bound() -> None:
    cache = NonceCache(ttl=300, max_entries=3)
    cache.check_and_remember("k", "a", created=NOW, now=NOW)
    with pytest.raises(SignatureError):
        cache.check_and_remember("k", "a", created=NOW, now=NOW + 300)
    cache.check_and_remember("k", "a", created=NOW + 301, now=NOW + 301)  # forgotten after its window
    for n in "bcdef":
        cache.check_and_remember("k", n, created=NOW + 301, now=NOW + 301)
    assert len(cache) <= 3


def test_all_reasons_are_exercised() -> None:
    # keep the reason list and the tests above in step
    assert {
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
    } == SIGNATURE_REASONS
    with pytest.raises(ValueError):
        SignatureError("made_up")


@settings(deadline=None)
@given(body=st.binary(max_size=200), nonce=st.text(alphabet="abcXYZ019-_", min_size=1, max_size=20))
def test_round_trip(body: bytes, nonce: str) -> None:
    headers = sign_request("PATCH", URL, {}, body, KEY, KEYID, created=NOW, nonce=nonce)
    got = verify_request("PATCH", URL, headers, body, _resolve, now=NOW)
    assert got.nonce == nonce
    if body:
        with pytest.raises(SignatureError):
            verify_request("PATCH", URL, headers, body[:-1], _resolve, now=NOW)


def _library_accepts(method: str, url: str, headers: Any, key: VerifyKey) -> bool:
    """The http-message-signatures library's own public verify() on the same request."""
    from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, InvalidSignature, algorithms

    from federation.httpsig import _header_pairs, _Headers, _Message

    class Fixed(HTTPSignatureKeyResolver):
        def resolve_public_key(self, key_id: str) -> Any:
            return key.crypto_key

        def resolve_private_key(self, key_id: str) -> Any:
            raise NotImplementedError

    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=Fixed())
    try:
        verifier.verify(_Message(method, url, _Headers(_header_pairs(headers))), max_age=None)
    except InvalidSignature:
        return False
    return True


@settings(deadline=None, max_examples=40)
@given(
    extra=st.lists(st.sampled_from(["content-type", "idempotency-key", "@authority", "@path"]), unique=True),
    nonce=st.text(alphabet="abcXYZ019-_", min_size=1, max_size=20),
    flip=st.integers(min_value=-1, max_value=63),
)
def test_signature_base_is_the_librarys(extra: list[str], nonce: str, flip: int) -> None:
    # verify_parsed builds the base with the library's internals from the once-parsed header: it must
    # equal the base the signer signed, and accept exactly what the library's public verify() accepts
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1", "Content-Digest": content_digest(BODY)}
    signed = sign_message("POST", URL, headers, KEY, KEYID, components=(*COMPONENTS, *extra), created=NOW, nonce=nonce)
    all_headers = {**headers, "Signature-Input": signed.signature_input, "Signature": signed.signature}
    parsed = parse_request_signature("POST", URL, all_headers, now=NOW)
    assert _signature_base(parsed) == signed.signature_base
    if flip >= 0:  # a damaged signature: both refuse
        raw = bytearray(base64.b64decode(signed.signature[len("sig1=:") : -1]))
        raw[flip] ^= 1
        all_headers["Signature"] = "sig1=:" + base64.b64encode(bytes(raw)).decode() + ":"
    ours = True
    try:
        verify_request("POST", URL, all_headers, BODY, _resolve, now=NOW)
    except SignatureError as exc:
        assert exc.reason == "signature_invalid"
        ours = False
    assert ours == _library_accepts("POST", URL, all_headers, KEY.public) == (flip < 0)


def test_unexpected_signature_parameter_is_malformed() -> None:
    sig_input = _signed()["Signature-Input"]
    assert _reason(headers=_with(Signature_Input=sig_input + ';x="1"')) == "signature_malformed"
    assert _reason(headers=_with(Signature_Input=sig_input + ", sig1=()")) == "signature_malformed"
