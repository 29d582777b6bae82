"""Handlers of the hub role (specs/federation.md section 9): members push supply summaries and unmet
demand to their hub, the hub sends routes back. Each POST verifies its own peer signature
(HubService.handle, the same checks as every peer message); GET /v1/federation/hub is public aggregate
state (role, members with fresh summaries, rounds, the last round's figures)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from exchange.api.federation import PEER_POST, request_url
from exchange.api.keys import services
from exchange.api.metrics import METRICS
from exchange.api.operations import Api, Args
from identifiers.errors import AuthenticationError

routes = Api("federation")


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda o: json.dumps(o, default=str, ensure_ascii=False))


async def _hub_post(request: web.Request, kind: str) -> web.Response:
    body = await request.read()
    try:
        result = await services(request).hub.handle(
            kind, request.method, request_url(request), list(request.headers.items()), body
        )
    except AuthenticationError as exc:
        request.app[METRICS].federation_refusals.labels(str(exc.details.get("reason", exc.code))).inc()
        raise
    return _json(result)


@routes.post(
    "/v1/federation/hub/summaries", "hubPushSupply", "A member pushes its signed supply summary to its hub", **PEER_POST
)
async def post_supply(request: web.Request, args: Args) -> web.Response:
    """A member pushes its signed supply summary to its hub."""
    return await _hub_post(request, "supply_summary")


@routes.post(
    "/v1/federation/hub/demand", "hubPushDemand", "A member sends its hub the orders it could not fill", **PEER_POST
)
async def post_demand(request: web.Request, args: Args) -> web.Response:
    """A member sends its hub the open orders its own rounds could not fill."""
    return await _hub_post(request, "hub_demand")


@routes.post(
    "/v1/federation/hub/routes", "hubPushRoutes", "The hub sends a member the owners to ask for its orders", **PEER_POST
)
async def post_routes(request: web.Request, args: Args) -> web.Response:
    """The hub sends a member the owners to ask for its orders."""
    return await _hub_post(request, "hub_routes")


@routes.get(
    "/v1/federation/hub",
    "federationHub",
    "Hub role and state: members, rounds, the last round's figures",
    response={"type": "object", "required": ["hub_mode", "members", "rounds"]},
)
async def hub_view(request: web.Request, args: Args) -> web.Response:
    """Hub role and state: members with fresh summaries, rounds, the last round's figures."""
    return _json(services(request).hub.view())
