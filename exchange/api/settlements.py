"""Handlers for settlement: run a batch (operator), list and read settlement records."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import require_principal
from exchange.api.keys import services
from exchange.api.params import IntParam, uuid_param
from exchange.api.parsing import parse_body
from exchange.api.responses import model_response, path_id
from exchange.services.contract_views import BatchView, SettlementList, SettlementRun, SettlementView

routes = web.RouteTableDef()
LIST_QUERY = (
    uuid_param("contract_id", "query", "only this contract's records"),
    IntParam("limit", "query", "at most this many (default 500)", lo=1, hi=10_000),
)
CONTRACT_ID, LIMIT = LIST_QUERY


@routes.post("/v1/settlements/run")
async def run(request: web.Request) -> web.Response:
    """Operator: settle every due contract period in one batch transaction."""
    who = require_principal(request)
    body = SettlementRun() if not request.body_exists else await parse_body(request, SettlementRun)  # `null` is a body
    result = await services(request).settlement.run(who, as_of=body.as_of)
    return model_response(BatchView.model_validate(result.to_json()), 201 if result.batch_id else 200)


@routes.get("/v1/settlements")
async def list_settlements(request: web.Request) -> web.Response:
    """Settlement records: `contract_id=` for one contract; otherwise the caller's (all for operator/regulator)."""
    who = require_principal(request)
    items = await services(request).settlement.list_for(
        who, contract_id=CONTRACT_ID.parse(request), limit=LIMIT.value(request, 500)
    )
    return model_response(SettlementList.model_validate({"items": items}))


@routes.get("/v1/settlements/{id:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}")
async def get_settlement(request: web.Request) -> web.Response:
    """One settlement record with its signed envelope and log index."""
    who = require_principal(request)
    view = await services(request).settlement.get(who, path_id(request))
    return model_response(SettlementView.model_validate(view))
