"""Handlers for settlement: run a batch (operator), list and read settlement records."""

from __future__ import annotations

from aiohttp import web

from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID, IntParam, uuid_param
from exchange.api.responses import model_response
from exchange.services.contract_views import BatchView, SettlementList, SettlementRun, SettlementView

routes = Api("settlement")
LIST_QUERY = (
    uuid_param("contract_id", "query", "only this contract's records"),
    IntParam("limit", "query", "at most this many (default 500)", lo=1, hi=10_000),
)
CONTRACT_ID, LIMIT = LIST_QUERY


@routes.post(
    "/v1/settlements/run",
    "runSettlement",
    "Operator: settle every due contract period as one batch transaction (201; 200 when nothing was due)",
    ok=201,
    response=BatchView,
    body=SettlementRun,
    body_required=False,
    signed=True,
    errors=(403, 413, 422),
    extra={"200": "nothing was due: no batch"},
)
async def run(request: web.Request, args: Args) -> web.Response:
    """Operator: settle every due contract period in one batch transaction."""
    result = await services(request).settlement.run(args.who, as_of=args.body(SettlementRun).as_of)
    return model_response(BatchView.model_validate(result.to_json()), 201 if result.batch_id else 200)


@routes.get(
    "/v1/settlements",
    "listSettlements",
    "Settlement records of a contract (its parties), or the caller's (all for operator and regulators)",
    params=LIST_QUERY,
    response=SettlementList,
    signed=True,
    errors=(403, 404, 422),
)
async def list_settlements(request: web.Request, args: Args) -> web.Response:
    """Settlement records: `contract_id=` for one contract; otherwise the caller's (all for operator/regulator)."""
    items = await services(request).settlement.list_for(
        args.who, contract_id=args.get(CONTRACT_ID), limit=args.get(LIMIT, 500)
    )
    return model_response(SettlementList.model_validate({"items": items}))


@routes.get(
    "/v1/settlements/{id:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}",
    "getSettlement",
    "One settlement record with its signed envelope and log index",
    params=(ID,),
    response=SettlementView,
    signed=True,
    errors=(403, 404, 422),
)
async def get_settlement(request: web.Request, args: Args) -> web.Response:
    """One settlement record with its signed envelope and log index."""
    view = await services(request).settlement.get(args.who, args[ID])
    return model_response(SettlementView.model_validate(view))
