"""Keys: encodings, C2SP key ids and verifier strings, key files, keyring."""

from __future__ import annotations

import base64
import hashlib
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import BadSignatureError, KeyFormatError
from federation.keys import (
    Keyring,
    SigningKey,
    VerifyKey,
    decode_public_key,
    encode_public_key,
    encode_signer_key,
    encode_verifier_key,
    generate_keypair_files,
    key_id,
    key_id_hex,
    load_public_key,
    load_signing_key,
    parse_signer_key,
    parse_verifier_key,
)

# RFC 8032 section 7.1, test 1
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

GO_PUB = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")[1:]

seeds = st.binary(min_size=32, max_size=32)
names = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs", "Co", "Cn"), blacklist_characters="+"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s))


def test_rfc8032_vector() -> None:
    key = SigningKey.from_seed(RFC8032_SEED)
    assert key.public.raw == RFC8032_PUB
    assert key.sign(b"") == RFC8032_SIG_EMPTY
    key.public.verify(RFC8032_SIG_EMPTY, b"")


def test_verify_rejects_tampering() -> None:
    key = SigningKey.generate()
    sig = key.sign(b"data")
    key.public.verify(sig, b"data")
    with pytest.raises(BadSignatureError):
        key.public.verify(sig, b"datA")
    with pytest.raises(BadSignatureError):
        key.public.verify(sig[:-1] + bytes([sig[-1] ^ 1]), b"data")
    with pytest.raises(BadSignatureError):
        key.public.verify(sig[:63], b"data")
    assert not SigningKey.generate().public.is_valid(sig, b"data")


def test_key_id_matches_c2sp_rule() -> None:
    pub = RFC8032_PUB
    expected = hashlib.sha256(b"example.com/log\n\x01" + pub).digest()[:4]
    assert key_id("example.com/log", pub) == expected
    assert key_id_hex("example.com/log", VerifyKey.from_bytes(pub)) == expected.hex()
    assert key_id("example.com/log2", pub) != expected


def test_go_verifier_key_parses() -> None:
    # golang.org/x/mod/sumdb/note documentation example
    vk = parse_verifier_key("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    assert vk.name == "PeterNeumann"
    assert vk.key_id.hex() == "c74f20a3"
    assert vk.encode() == "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


@pytest.mark.parametrize(
    "bad",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumanN+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong name
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # bad base64
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x02" + GO_PUB).decode(),  # type byte 0x02
        "PeterNeumann+c74f20a3+" + base64.b64encode(b"\x01" + GO_PUB + b"\x00").decode(),  # 33-byte key
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_verifier_key(bad)


@settings(deadline=None)
@given(seed=seeds, name=names)
def test_verifier_and_signer_key_round_trip(seed: bytes, name: str) -> None:
    key = SigningKey.from_seed(seed)
    text = encode_verifier_key(name, key.public)
    parsed = parse_verifier_key(text)
    assert (parsed.name, parsed.key, parsed.key_id) == (name, key.public, key_id(name, key.public))
    n2, k2 = parse_signer_key(encode_signer_key(name, key))
    assert n2 == name and k2.seed() == seed


@settings(deadline=None)
@given(seed=seeds)
def test_public_key_text_round_trip(seed: bytes) -> None:
    pub = SigningKey.from_seed(seed).public
    text = encode_public_key(pub)
    assert len(text) == 44
    assert decode_public_key(text) == pub
    assert VerifyKey.from_pem(pub.to_pem()) == pub


def test_decode_rejects_bad_public_keys() -> None:
    for bad in ["", "abc", "!!!!", encode_public_key(RFC8032_PUB)[:-4]]:
        with pytest.raises(KeyFormatError):
            decode_public_key(bad)


def test_pem_round_trip() -> None:
    key = SigningKey.generate()
    assert SigningKey.from_pem(key.to_pem()).seed() == key.seed()
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_generate_keypair_files(tmp_path) -> None:
    priv, pub = generate_keypair_files(tmp_path / "keys", "alice")
    assert priv.name == "alice.pem" and pub.name == "alice.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()
    key = load_signing_key(priv)
    assert load_public_key(pub) == key.public
    with pytest.raises(FileExistsError):
        generate_keypair_files(tmp_path / "keys", "alice")
    with pytest.raises(KeyFormatError):
        generate_keypair_files(tmp_path, "a+b")


def test_load_public_key_accepts_verifier_string(tmp_path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "x.pub"
    path.write_text(encode_verifier_key("x", key.public) + "\n")
    assert load_public_key(path) == key.public


def test_keyring_lookup_and_windows() -> None:
    a, b = SigningKey.generate().public, SigningKey.generate().public
    ring = Keyring()
    entry = ring.add_named("exchange", a, owner="op", not_before=100, not_after=200)
    ring.add("b", b)
    assert entry.key_id == key_id_hex("exchange", a)
    assert ring.lookup(entry.key_id) == a
    assert ring.lookup(key_id("exchange", a)) == a  # bytes ids are looked up as hex
    assert ring.lookup(entry.key_id, at=150) == a
    assert ring.lookup(entry.key_id, at=99) is None
    assert ring.lookup(entry.key_id, at=201) is None
    assert ring.lookup("b", at=10**9) == b
    assert ring.lookup("nope") is None
    assert [e.key_id for e in ring.entries(at=50)] == ["b"]
    assert len(ring) == 2 and "b" in ring
    with pytest.raises(KeyFormatError):
        ring.add("b", a)
