"""Handlers for settlement: run a batch (operator), list and read settlement records."""

from __future__ import annotations

import re

import pydantic
from aiohttp import web

from exchange.api.auth import require_principal
from exchange.api.contracts import json_response
from exchange.api.keys import services
from exchange.api.parsing import parse_body, query_int
from exchange.api.responses import path_id
from identifiers.errors import ValidationError

routes = web.RouteTableDef()
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def query_id(request: web.Request, name: str) -> str | None:
    """An optional id query parameter, or ValidationError naming it."""
    value = request.query.get(name)
    if not value:
        return None
    if not _ID.fullmatch(value):
        raise ValidationError(f"{name}: not an id (UUID, lower-case hex)", field=name)
    return value


class RunBody(pydantic.BaseModel):
    """Body of POST /v1/settlements/run: settle what was due by `as_of` (default: now)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    as_of: pydantic.StrictInt | None = pydantic.Field(default=None, ge=0)


@routes.post("/v1/settlements/run")
async def run(request: web.Request) -> web.Response:
    """Operator: settle every due contract period in one batch transaction."""
    who = require_principal(request)
    body = await parse_body(request, RunBody) if await request.read() else RunBody()
    result = await services(request).settlement.run(who, as_of=body.as_of)
    return json_response(result.to_json(), 201 if result.batch_id else 200)


@routes.get("/v1/settlements")
async def list_settlements(request: web.Request) -> web.Response:
    """Settlement records: `contract_id=` for one contract; otherwise the caller's (all for operator/regulator)."""
    who = require_principal(request)
    items = await services(request).settlement.list_for(
        who, contract_id=query_id(request, "contract_id"), limit=query_int(request, "limit", 500, lo=1)
    )
    return json_response({"items": items})


@routes.get("/v1/settlements/{id}")
async def get_settlement(request: web.Request) -> web.Response:
    """One settlement record with its signed envelope and log index."""
    who = require_principal(request)
    return json_response(await services(request).settlement.get(who, path_id(request)))
