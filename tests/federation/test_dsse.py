"""DSSE envelopes: the published vectors, hetex JSON records, every rejection reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.dsse import (
    envelope_bytes,
    envelope_from_bytes,
    pae,
    record_payload_type,
    sign_envelope,
    sign_json_envelope,
    verify_envelope,
    verify_json_envelope,
)
from federation.errors import EnvelopeError
from federation.keys import Keyring, SigningKey, key_id_hex
from tests.federation.conftest import VECTORS

DATA = json.loads((VECTORS / "dsse" / "dsse-vectors.json").read_text(encoding="utf-8"))
KEYS = {name: SigningKey.from_seed(bytes.fromhex(k["seed"])) for name, k in DATA["keys"].items()}


def _ring(names: list[str]) -> Keyring:
    ring = Keyring()
    for name in names:
        ring.add(name, KEYS[name].public)
    return ring


def _payload(env: dict[str, Any]) -> bytes:
    text = env["payload"].replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def test_vector_keys_match() -> None:
    for name, k in DATA["keys"].items():
        assert KEYS[name].public.raw.hex() == k["public"]


@pytest.mark.parametrize("vector", DATA["vectors"], ids=[v["id"] for v in DATA["vectors"]])
def test_published_vector(vector: dict[str, Any]) -> None:
    env = vector["envelope"]
    if vector["id"] != "payload-type-swapped":  # there the PAE is of the original (signed) type
        assert pae(env["payloadType"], _payload(env)).hex() == vector["pae"]
    call = lambda: verify_envelope(  # noqa: E731
        env,
        _ring(vector["trustedKeys"]),
        payload_type=vector["supportedPayloadTypes"],
        threshold=vector["threshold"],
    )
    if vector["expect"] == "accept":
        assert call() == _payload(env)
    else:
        with pytest.raises(EnvelopeError):
            call()


def test_pae_of_vectors_is_what_was_signed() -> None:
    # the signature by A in each vector verifies over the published PAE bytes
    for vector in DATA["vectors"]:
        sig = vector["envelope"]["signatures"][0]["sig"].replace("-", "+").replace("_", "/")
        assert KEYS["A"].public.is_valid(base64.b64decode(sig), bytes.fromhex(vector["pae"]))


def test_pae_format() -> None:
    assert pae("a/b", b"xy") == b"DSSEv1 3 a/b 2 xy"
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("\u00e4", b"") == b"DSSEv1 2 \xc3\xa4 0 "


def test_sign_reproduces_vector() -> None:
    v = DATA["vectors"][0]
    env = sign_envelope(v["envelope"]["payloadType"], _payload(v["envelope"]), [("A", KEYS["A"])])
    assert env == v["envelope"]


PT = record_payload_type("usage")
ALICE = SigningKey.from_seed(bytes(range(32)))
ALICE_ID = key_id_hex("alice", ALICE.public)


def _alice_ring(**kw: Any) -> Keyring:
    ring = Keyring()
    ring.add_named("alice", ALICE.public, **kw)
    return ring


@settings(deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text(max_size=20),
        max_size=6,
    )
)
def test_json_round_trip(record: dict[str, Any]) -> None:
    env = sign_json_envelope(PT, record, [(ALICE_ID, ALICE)])
    stored = envelope_bytes(env)
    assert verify_json_envelope(envelope_from_bytes(stored), _alice_ring(), payload_type=PT) == record


def test_payload_type_name() -> None:
    assert PT == "application/vnd.hetex.usage+json"
    with pytest.raises(ValueError):
        record_payload_type("Usage Record")


def _reason(env: Any, ring: Keyring | None = None, **kw: Any) -> str:
    with pytest.raises(EnvelopeError) as info:
        verify_envelope(env, ring or _alice_ring(), **kw)
    return info.value.reason


def test_rejection_reasons() -> None:
    env = sign_envelope(PT, b'{"a":1}', [(ALICE_ID, ALICE)])
    assert verify_envelope(env, _alice_ring(), payload_type=PT) == b'{"a":1}'
    assert _reason(env, payload_type=record_payload_type("settlement")) == "wrong_type"
    tampered = dict(env, payload=base64.b64encode(b'{"a":2}').decode())
    assert _reason(tampered) == "bad_signature"
    stranger = SigningKey.generate()
    other = sign_envelope(PT, b"x", [("stranger", stranger)])
    assert _reason(other) == "unknown_key"
    assert _reason(env, threshold=2) == "threshold_not_met"
    bads: list[Any] = [
        None,
        [],
        {},
        dict(env, payload=5),
        dict(env, payload="!!"),
        dict(env, signatures=[]),
        dict(env, signatures=[{"keyid": 5, "sig": "AA=="}]),
        dict(env, payloadType=""),
        dict(env, signatures=["x"]),
        dict(env, payload="ab+_"),
    ]
    for bad in bads:
        assert _reason(bad) == "malformed"


def test_validity_window() -> None:
    env = sign_envelope(PT, b"x", [(ALICE_ID, ALICE)])
    ring = _alice_ring(not_before=100, not_after=200)
    assert verify_envelope(env, ring, at=150) == b"x"
    assert _reason(env, ring, at=250) == "unknown_key"


def test_non_canonical_json_payload_refused() -> None:
    env = sign_envelope(PT, b'{"b":1, "a":2}', [(ALICE_ID, ALICE)])
    with pytest.raises(EnvelopeError) as info:
        verify_json_envelope(env, _alice_ring())
    assert info.value.reason == "malformed"


def test_envelope_bytes_are_canonical() -> None:
    env = sign_envelope(PT, b"x", [(ALICE_ID, ALICE)])
    data = envelope_bytes(env)
    assert data.startswith(b'{"payload":') and b" " not in data
    assert envelope_from_bytes(data) == env
