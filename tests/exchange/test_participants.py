"""Participants through the HTTP API: self-registration with proof of possession, operator-added roles."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from exchange.client import RemoteConflictError, RemoteValidationError
from exchange.services.participants import participant_key_id
from exchange.storage.participants import RegistrationRecord
from federation.keys import SigningKey
from identifiers.crockford import is_code
from identifiers.errors import ValidationError
from tests.exchange.registration_support import Api, api

__all__ = ["api"]


async def test_provider_and_buyer_register_and_see_themselves(api: Api) -> None:
    p = api.client()
    view = await p.register("provider", "Guizhou DC Co.")
    assert api.http and p.last_status == 201
    assert view["role"] == "provider" and view["key_id"] == participant_key_id(p.key.public)
    assert view["public_key"] == p.key.public.to_base64() and is_code(view["operator_code"], 4, 4)
    assert await p.me() == view
    b = api.client()
    bview = await b.register("buyer", "Lab", "CN-BJ")
    assert bview["operator_code"] is None and bview["home_region"] == "CN-BJ"
    async with api.svc.sessions() as session:
        records = (await session.execute(select(RegistrationRecord))).scalars().all()
    assert sorted(r.subject for r in records) == sorted([view["id"], bview["id"]])
    rec = next(r for r in records if r.subject == view["id"])
    assert rec.action == "participant.register" and rec.method == "POST"
    assert rec.target_uri.endswith("/v1/participants") and '"Guizhou DC Co."' in rec.body
    assert rec.content_digest.startswith("sha-512=:") and "keyid=" in rec.signature_input


async def test_operator_codes_are_distinct(api: Api) -> None:
    codes = {(await (await api.provider(f"p{i}")).me())["operator_code"] for i in range(8)}
    assert len(codes) == 8


async def test_same_key_twice_is_a_conflict(api: Api) -> None:
    p = api.client()
    await p.register("buyer", "one")
    before = await api.counts()
    with pytest.raises(RemoteConflictError) as err:
        await p.register("provider", "two")
    assert err.value.remote_code == "key_already_registered"
    after = await api.counts()
    assert {k: v for k, v in after.items() if k != "seen_nonces"} == {
        k: v for k, v in before.items() if k != "seen_nonces"
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "regulator", "name": "r"}, "role"),
        ({"role": "buyer", "name": ""}, "name"),
        ({"role": "buyer", "name": "b", "home_region": "XX-YY"}, "home_region"),
        ({"role": "buyer", "name": "b", "home_region": "nowhere"}, "home_region"),
        ({"role": "buyer", "name": "b", "extra": 1}, "extra"),
    ],
)
async def test_bad_registration_names_the_field(api: Api, body: dict[str, object], field: str) -> None:
    c = api.client()
    with pytest.raises(RemoteValidationError) as err:
        await c.request("POST", "/v1/participants", {**body, "public_key": c.key.public.to_base64()})
    assert err.value.status == 422 and err.value.field == field


async def test_admin_adds_regulator_and_peer(api: Api) -> None:
    key = SigningKey.generate()
    view = await api.svc.participants.add_by_operator("regulator", "NDRC", key.public.to_base64())
    assert view.role == "regulator" and view.operator_code is None
    peer = await api.svc.participants.add_by_operator("peer", "hetex-west", SigningKey.generate().public.to_base64())
    assert peer.role == "peer"
    me = await api.client(key).me()
    assert me["role"] == "regulator"
    with pytest.raises(ValidationError):
        await api.svc.participants.add_by_operator("king", "x", SigningKey.generate().public.to_base64())
    with pytest.raises(ValidationError):
        await api.svc.participants.add_by_operator("regulator", "x", "not-a-key")


@pytest.mark.parametrize("name", ["   ", "\u3000", "a\tb", "x" * 201, ""])
async def test_admin_names_follow_the_api_rule(api: Api, name: str) -> None:
    """`hetex admin` names obey the API's name rule (fields.Name), not str.isprintable: only-space names
    (printable) are refused, as a registration would refuse them; nothing is stored."""
    before = await api.counts()
    with pytest.raises(ValidationError) as err:
        await api.svc.participants.add_by_operator("regulator", name, SigningKey.generate().public.to_base64())
    assert err.value.field == "name"
    assert await api.counts() == before


async def test_admin_name_with_unicode_letters_and_inner_spaces_is_accepted(api: Api) -> None:
    view = await api.svc.participants.add_by_operator(
        "regulator", "国家 发改委 NDRC", SigningKey.generate().public.to_base64()
    )
    assert view.name == "国家 发改委 NDRC"
