"""OpenAPI: the committed specs/openapi.yaml is the generated one, the app serves it, and schemathesis
(from the served document) finds no 5xx and no schema-violating response, unsigned and signed."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode

from exchange.api.openapi import build_openapi, openapi_yaml
from exchange.client import HetexClient
from exchange.services.participants import participant_key_id
from federation.httpsig import sign_request
from federation.keys import SigningKey
from identifiers.specs import specs_dir
from tests.exchange.registration_support import LiveServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SIGNATURE_HEADERS = {"signature", "signature-input", "content-digest"}
HTTP = requests.Session()


def test_committed_openapi_is_current() -> None:
    committed = (specs_dir() / "openapi.yaml").read_text(encoding="utf-8")
    assert committed == openapi_yaml(), "run: python -m exchange.api.openapi > specs/openapi.yaml"


def test_every_route_is_described() -> None:
    from aiohttp import web

    from exchange.api.app import ROUTE_TABLES

    doc = build_openapi()
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    routed = {
        (r.method, re.sub(r"\{(\w+):[^/]*\}", r"{\1}", r.path))
        for table in ROUTE_TABLES
        for r in table
        if isinstance(r, web.RouteDef) and r.method != "HEAD"
    }
    assert routed <= described
    assert ("GET", "/metrics") in described
    for (method, path), op in ((k, doc["paths"][k[1]][k[0].lower()]) for k in described):
        if "security" in op:
            assert {"401", "403"} <= set(op["responses"]), (method, path)


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


def _register(base: str, role: str) -> SigningKey:
    async def go() -> SigningKey:
        async with HetexClient(base, SigningKey.generate()) as c:
            await c.register(role, f"fuzz {role}", "CN-SH")
            if role == "provider":
                site = await c.add_site("CN-SH", "fuzz site")
                pool = await c.add_pool(site["cri"], "NV-H100-SXM", 8)
                await c.post_offer(pool["cri"], 8, 100, 0)
            return c.key

    return asyncio.run(go())


def _send(base: str, case: Any, key: SigningKey | None) -> requests.Response:
    if case.body is NOT_SET:
        body = b""
    elif isinstance(case.body, bytes):
        body = case.body
    else:
        body = json.dumps(case.body).encode()
    headers = {k: str(v) for k, v in (case.headers or {}).items() if k.lower() not in SIGNATURE_HEADERS}
    registering = case.operation.definition.raw.get("operationId") == "registerParticipant"
    if registering and key is not None and isinstance(case.body, dict):
        # proof of possession: the body carries the signing key
        body = json.dumps({**case.body, "public_key": key.public.to_base64()}).encode()
    if body:
        headers.setdefault("Content-Type", "application/json")
    prepared = requests.Request(
        case.method, base + case.formatted_path, params=case.query or None, data=body, headers=headers
    ).prepare()
    if key is not None:
        assert prepared.url is not None
        prepared.headers.update(sign_request(case.method, prepared.url, {}, body, key, participant_key_id(key.public)))
    return HTTP.send(prepared, timeout=30)


def _fuzz(live: LiveServer, mode: GenerationMode, examples: int, signer: Callable[[Any], SigningKey | None]) -> int:
    schema = schemathesis.openapi.from_url(live.base + "/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            nonlocal calls
            response = _send(live.base, case, signer(case))
            calls += 1
            if mode is GenerationMode.NEGATIVE:
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)
                if response.status_code >= 400:
                    problem = response.json()
                    assert problem["status"] == response.status_code and problem["code"]
                return
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            # no invalid input exists for this operation (e.g. no parameters and no body)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_schemathesis_unsigned(live: LiveServer) -> None:
    """Every operation without a signature: public reads answer per schema, the rest 401 problem+json."""
    assert _fuzz(live, GenerationMode.POSITIVE, 5, lambda case: None) > 50


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_schemathesis_signed(live: LiveServer) -> None:
    """Every operation signed by a registered participant of the right role, valid and invalid data."""
    provider, buyer = _register(live.base, "provider"), _register(live.base, "buyer")

    def signer(case: Any) -> SigningKey:
        op_id = case.operation.definition.raw.get("operationId")
        if op_id == "registerParticipant":
            return SigningKey.generate()
        return buyer if "Order" in op_id else provider

    assert _fuzz(live, GenerationMode.POSITIVE, 15, signer) > 150
    assert _fuzz(live, GenerationMode.NEGATIVE, 5, signer) > 30


def test_served_document_is_the_generated_one() -> None:
    doc = yaml.safe_load(openapi_yaml())
    assert doc == json.loads(json.dumps(build_openapi()))
