"""Handlers for contracts and their usage: list/read, provider confirmation, cancellation, signed usage."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from aiohttp import web

from exchange.api.auth import require_principal
from exchange.api.keys import services
from exchange.api.parsing import parse_body, query_int
from exchange.api.responses import path_id, query_choice
from exchange.services.contracts import CONTRACT_STATUSES
from identifiers.errors import ValidationError

routes = web.RouteTableDef()


class CancelBody(pydantic.BaseModel):
    """Body of POST /v1/contracts/{id}/cancel."""

    model_config = pydantic.ConfigDict(extra="forbid")

    reason: str = pydantic.Field(min_length=1, max_length=200)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response of plain data."""
    return web.Response(status=status, text=json.dumps(data, ensure_ascii=False), content_type="application/json")


@routes.get("/v1/contracts")
async def list_contracts(request: web.Request) -> web.Response:
    """The caller's contracts (as buyer or provider), newest first."""
    who = require_principal(request)
    items = await services(request).contracts.list_for(
        who, status=query_choice(request, "status", CONTRACT_STATUSES), limit=query_int(request, "limit", 100, lo=1)
    )
    return json_response({"items": items})


@routes.get("/v1/contracts/{id}")
async def get_contract(request: web.Request) -> web.Response:
    """One contract, for its buyer or provider."""
    who = require_principal(request)
    return json_response(await services(request).contracts.get(who, path_id(request)))


@routes.post("/v1/contracts/{id}/confirm")
async def confirm(request: web.Request) -> web.Response:
    """The provider confirms the contract's start."""
    who = require_principal(request)
    return json_response(await services(request).contracts.confirm(who, path_id(request)))


@routes.post("/v1/contracts/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Buyer or provider cancels (rules: specs/billing.md section 4)."""
    who = require_principal(request)
    body = await parse_body(request, CancelBody)
    return json_response(await services(request).contracts.cancel(who, path_id(request), body.reason))


@routes.post("/v1/contracts/{id}/usage")
async def report_usage(request: web.Request) -> web.Response:
    """A node-signed usage report (DSSE envelope body); 201 when new, 200 for an identical retry."""
    who = require_principal(request)
    try:
        envelope = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValidationError("request body is not valid JSON", field="body") from None
    if not isinstance(envelope, dict):
        raise ValidationError("request body must be a DSSE envelope (JSON object)", field="body")
    view, created = await services(request).usage.report(who, path_id(request), envelope)
    return json_response(view, 201 if created else 200)


@routes.get("/v1/contracts/{id}/usage")
async def list_usage(request: web.Request) -> web.Response:
    """Every usage report of a contract with its flags."""
    who = require_principal(request)
    return json_response({"items": await services(request).usage.list_for(who, path_id(request))})
