"""federation.peering (pure): destination-bound peer messages, capacity summaries, two-party contracts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import SignatureError
from federation.keys import SigningKey
from federation.peering import (
    CapacityClass,
    CapacitySummary,
    ContractEnvelopeError,
    LocalIdentity,
    PeerIdentity,
    PeerMessageError,
    StaleSummaryError,
    SummaryError,
    countersign_contract,
    message_hash,
    new_message,
    sign_contract,
    sign_peer_request,
    sign_summary,
    verify_contract,
    verify_peer_request,
    verify_summary,
)

NOW = 1_795_000_000


def local(authority: str) -> LocalIdentity:
    """A fresh exchange identity."""
    key = SigningKey.generate()
    return LocalIdentity(
        PeerIdentity(authority, f"{authority.lower()}.test/log", key.public, f"http://{authority}"), key
    )


A, B, C = local("A"), local("B"), local("C")
PEERS = {x.key_id: x.identity for x in (A, C)}  # what B knows


def verify_at_b(url: str, body: bytes, headers: dict[str, str], now: int = NOW) -> object:
    return verify_peer_request(
        "POST", url, headers, body, peer_by_key_id=PEERS.get, self_authority="B", expected_type="order_offer", now=now
    )


def signed(
    msg: dict[str, object], url: str = "http://B/v1/federation/orders", me: LocalIdentity = A
) -> tuple[bytes, dict[str, str]]:
    return sign_peer_request("POST", url, msg, me, created=NOW, nonce="n-1")


def test_valid_message_verifies() -> None:
    msg = new_message("order_offer", "A", "B", {"order": {"x": 1}}, sent_at=NOW)
    body, headers = signed(msg)
    v = verify_at_b("http://B/v1/federation/orders", body, headers)
    assert v.peer == A.identity and v.message_id == msg["message_id"] and v.body == {"order": {"x": 1}}  # type: ignore[attr-defined]
    assert v.signature.nonce == "n-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m, u: (new_message("order_offer", "A", "C", {}, sent_at=NOW), u), "wrong_destination"),
        (lambda m, u: (new_message("order_offer", "C", "B", {}, sent_at=NOW), u), "wrong_sender"),
        (lambda m, u: (new_message("mirror", "A", "B", {}, sent_at=NOW), u), "wrong_type"),
        (lambda m, u: (new_message("order_offer", "A", "B", {}, sent_at=NOW - 900), u), "stale_message"),
        (lambda m, u: (dict(m, protocol="other/9"), u), "wrong_protocol"),
        (lambda m, u: (dict(m, message_id="bad id!"), u), "malformed_message"),
    ],
)
def test_message_rules(mutate: object, reason: str) -> None:
    msg = new_message("order_offer", "A", "B", {}, sent_at=NOW)
    msg, url = mutate(msg, "http://B/v1/federation/orders")  # type: ignore[operator]
    body, headers = signed(msg, url)
    with pytest.raises(PeerMessageError) as info:
        verify_at_b(url, body, headers)
    assert info.value.reason == reason


def test_replay_to_another_url_and_unknown_keys_fail_the_signature() -> None:
    msg = new_message("order_offer", "A", "B", {}, sent_at=NOW)
    body, headers = signed(msg, "http://C/v1/federation/orders")
    with pytest.raises(SignatureError) as info:
        verify_at_b("http://B/v1/federation/orders", body, headers)
    assert info.value.reason == "signature_invalid"
    stranger = local("A")  # same authority, another key
    body, headers = signed(msg, me=stranger)
    with pytest.raises(SignatureError) as info:
        verify_at_b("http://B/v1/federation/orders", body, headers)
    assert info.value.reason == "unknown_key"


@settings(max_examples=40, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=8), st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20), max_size=5),
    sent=st.integers(NOW - 300, NOW + 300),
)
def test_any_body_roundtrips_and_any_change_is_caught(body: dict[str, object], sent: int) -> None:
    msg = new_message("order_offer", "A", "B", body, sent_at=sent)
    raw, headers = signed(msg)
    assert verify_at_b("http://B/v1/federation/orders", raw, headers).message == msg  # type: ignore[attr-defined]
    tampered = raw.replace(b'"from_authority":"A"', b'"from_authority":"C"')
    with pytest.raises(SignatureError):
        verify_at_b("http://B/v1/federation/orders", tampered, headers)
    assert message_hash(msg) == message_hash(dict(msg, sent_at=sent + 1))
    assert message_hash(msg) != message_hash(dict(msg, body={**body, "extra": 1}))


def summary(version: int = 3, expires: int = NOW + 60, origin: str = "A") -> CapacitySummary:
    classes = (CapacityClass("CN-NM", "NV-H100-SXM", 24, 16, ((1500, 8), (2000, 16))),)
    return CapacitySummary(origin, "http://A", version, NOW, expires, classes)


def test_summary_verification() -> None:
    env = sign_summary(summary(), A)
    assert verify_summary(env, A.identity, now=NOW, last_version=2) == summary()
    cases = [
        (dict(env, signatures=[]), {}, "unsigned"),
        (env, {"origin": C.identity}, "bad_signature"),
        (sign_summary(summary(origin="C"), A), {}, "wrong_origin"),
        (sign_summary(summary(expires=NOW), A), {}, "expired"),
        ({"payload": "!!", "payloadType": "x", "signatures": [{"sig": "AA=="}]}, {}, "malformed"),
    ]
    for envelope, kw, reason in cases:
        with pytest.raises(SummaryError) as info:
            verify_summary(envelope, kw.get("origin", A.identity), now=NOW)
        assert info.value.reason == reason, reason
    with pytest.raises(StaleSummaryError):
        verify_summary(env, A.identity, now=NOW, last_version=3)


def test_summary_fillable_respects_models_regions_and_limits() -> None:
    s = summary()
    assert s.fillable(None, None, {"*": 1800}) == 8
    assert s.fillable(["NV-H100-SXM"], ["CN-NM"], {"NV-H100-SXM": 2000}) == 24
    assert s.fillable(["HW-910B3"], None, {"*": 9999}) == 0
    assert s.fillable(None, ["CN-SH"], {"*": 9999}) == 0
    assert s.fillable(None, None, {"HW-910B3": 9999}) == 0
    assert s.best_ask(None, None) == 1500 and s.best_ask(None, ["CN-SH"]) is None
    assert CapacitySummary.from_json(s.to_json()) == s


def test_contract_needs_both_exchange_signatures() -> None:
    body = {"contract_id": "c1", "devices": 8, "buyer_price_fen": 2000}
    by_a = sign_contract(body, A)
    assert verify_contract(by_a, A.identity, B.identity, require_both=False) == body
    with pytest.raises(ContractEnvelopeError):
        verify_contract(by_a, A.identity, B.identity)
    both = countersign_contract(by_a, B)
    assert verify_contract(both, A.identity, B.identity) == body
    assert verify_contract(both, B.identity, A.identity) == body
    assert countersign_contract(both, B) == both  # countersigning twice changes nothing
    with pytest.raises(ContractEnvelopeError):
        verify_contract(countersign_contract(by_a, C), A.identity, B.identity)
    forged = dict(both, payload=sign_contract(dict(body, devices=9), A)["payload"])
    with pytest.raises(ContractEnvelopeError):
        verify_contract(forged, A.identity, B.identity)
