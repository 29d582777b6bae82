"""Handlers for participants: self-registration (proof of key possession) and who-am-I."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import signed_request
from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID
from exchange.api.responses import model_response
from exchange.services.participants import ParticipantRegistration, ParticipantStatusChange, ParticipantView

routes = Api("participants")


@routes.post(
    "/v1/participants",
    "registerParticipant",
    "Register a provider or buyer; signed by the key being registered (proof of possession)",
    ok=201,
    response=ParticipantView,
    body=ParticipantRegistration,
    signed=True,
    principal=False,  # the key is not known yet: the auth layer verifies it against the body's public_key
    errors=(409, 413, 422),
)
async def register(request: web.Request, args: Args) -> web.Response:
    """Register a provider or buyer; the request is signed by the key it registers."""
    body = args.body(ParticipantRegistration)
    return model_response(await services(request).participants.register(body, signed_request(request)), 201)


@routes.get(
    "/v1/participants/me",
    "me",
    "The participant who signed the request",
    response=ParticipantView,
    signed=True,
)
async def me(request: web.Request, args: Args) -> web.Response:
    """The participant who signed this request."""
    return model_response(await services(request).participants.get(args.who.id))


@routes.post(
    "/v1/participants/{id}/status",
    "setParticipantStatus",
    "Operator: suspend or reinstate a participant (its signed requests are refused from the next one on)",
    params=(ID,),
    response=ParticipantView,
    body=ParticipantStatusChange,
    signed=True,
    errors=(403, 404, 413, 422),
)
async def set_status(request: web.Request, args: Args) -> web.Response:
    """Operator: suspend or reinstate a participant."""
    body = args.body(ParticipantStatusChange)
    return model_response(await services(request).participants.set_status(args.who, args[ID], body.status))
