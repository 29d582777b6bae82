"""Handlers for participants: self-registration (proof of key possession) and who-am-I."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import require_principal, signed_request
from exchange.api.keys import services
from exchange.api.parsing import parse_body
from exchange.api.responses import model_response
from exchange.services.participants import ParticipantRegistration

routes = web.RouteTableDef()


@routes.post("/v1/participants")
async def register(request: web.Request) -> web.Response:
    """Register a provider or buyer; the request is signed by the key it registers."""
    body = await parse_body(request, ParticipantRegistration)
    view = await services(request).participants.register(body, signed_request(request))
    return model_response(view, 201)


@routes.get("/v1/participants/me")
async def me(request: web.Request) -> web.Response:
    """The participant who signed this request."""
    who = require_principal(request)
    return model_response(await services(request).participants.get(who.id))
