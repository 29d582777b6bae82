"""Framework-made answers agree with the spec: 404/405/413 are problem+json, 405 names the allowed
methods in `Allow`, and an empty query value is refused naming the parameter."""

from __future__ import annotations

import pytest

from exchange.client import RemoteError
from tests.exchange.registration_support import Api, api

__all__ = ["api"]

PROBLEM = "application/problem+json"


async def test_unknown_path_is_problem_json(api: Api) -> None:
    resp = await api.http.get("/v1/no-such-thing")
    assert resp.status == 404 and resp.content_type == PROBLEM
    problem = await resp.json()
    assert problem["status"] == 404 and problem["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/orders", {"GET", "POST"}),
        ("DELETE", "/v1/market", {"GET"}),
        ("POST", "/v1/ledger/checkpoint", {"GET"}),
        ("PUT", "/v1/offers/0190d3a0-0000-7000-8000-000000000000", {"GET", "PATCH", "DELETE"}),
    ],
)
async def test_wrong_method_is_405_with_allow(api: Api, method: str, path: str, allowed: set[str]) -> None:
    resp = await api.http.request(method, path)
    assert resp.status == 405 and resp.content_type == PROBLEM
    got = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= got and method not in got
    problem = await resp.json()
    assert problem["status"] == 405 and problem["code"] == "method_not_allowed"
    assert set(problem["allowed_methods"]) == got


async def test_body_too_large_is_413_problem_json(api: Api) -> None:
    resp = await api.http.post("/v1/participants", data=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert resp.status == 413 and resp.content_type == PROBLEM
    assert (await resp.json())["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/rounds?limit=", "limit"),
        ("/v1/ledger/proofs/inclusion?index=0&size=", "size"),
        ("/v1/ledger/proofs/consistency?from=", "from"),
        ("/v1/federation/consistency?from=1&to=", "to"),
    ],
)
async def test_empty_query_value_is_refused(api: Api, path: str, name: str) -> None:
    resp = await api.http.get(path)
    assert resp.status == 400 and resp.content_type == PROBLEM
    problem = await resp.json()
    assert problem["field"] == name and problem["code"] == "empty_query_value"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/orders?status=", "status"),
        ("/v1/orders?created_after=", "created_after"),
        ("/v1/orders?cursor=", "cursor"),
        ("/v1/contracts?limit=", "limit"),
        ("/v1/offers?status=", "status"),
        ("/v1/settlements?contract_id=", "contract_id"),
    ],
)
async def test_empty_query_value_is_refused_signed(api: Api, path: str, name: str) -> None:
    buyer = await api.buyer()
    with pytest.raises(RemoteError) as err:
        await buyer.request("GET", path)
    assert err.value.status == 400
    assert err.value.problem["field"] == name and err.value.problem["code"] == "empty_query_value"


async def test_export_period_beyond_int64_is_4xx(api: Api) -> None:
    """Found by schemathesis: `to` >= 2^63 was a 500 (SQLite OverflowError); the JSON boundary refuses integers
    beyond 2^53-1 (400) and the model bounds the period (422)."""
    regulator = await api.regulator()
    with pytest.raises(RemoteError) as err:
        await regulator.request("POST", "/v1/audit/exports", {"from": 0, "to": 1 << 63})
    assert err.value.status == 400 and err.value.problem["field"] == "to"
    with pytest.raises(RemoteError) as err:
        await regulator.request("POST", "/v1/audit/exports", {"from": 0, "to": (1 << 53)})
    assert err.value.status in (400, 422) and err.value.problem["field"] == "to"


@pytest.mark.parametrize("public_key", [5, None, ["a"], {"k": 1}])
async def test_registration_with_non_string_key_is_refused(api: Api, public_key: object) -> None:
    """Found by schemathesis: a non-string public_key was a 500 before the signature was checked."""
    before = await api.counts()
    client = api.client()
    with pytest.raises(RemoteError) as err:
        await client.request("POST", "/v1/participants", {"role": "buyer", "name": "x", "public_key": public_key})
    assert err.value.status in (401, 422)
    assert await api.counts() == before


def test_error_details_never_clobber_or_crash_the_problem() -> None:
    """Found by schemathesis (stateful): a domain error with a detail named `status` (an export not ready)
    made problem_response raise, and aiohttp answered 500 text/plain instead of 409 problem+json."""
    import json as _json

    from exchange.api.problems import error_response
    from exchange.services.audit import ExportNotReadyError

    response = error_response(ExportNotReadyError("audit export x is queued", status="queued"))
    assert response.status == 409 and response.content_type == PROBLEM
    assert response.text is not None
    body = _json.loads(response.text)
    assert body["status"] == 409 and body["code"] == "export_not_ready"
    assert body["detail"] == "audit export x is queued"
