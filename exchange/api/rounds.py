"""Handlers for clearing rounds (operator-triggered run, reads), the market view and fills; and the
periodic round task started with the app when `round_interval_seconds` > 0."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID, IntParam

log = logging.getLogger("hetex.rounds")
routes = Api("rounds")

LIMIT = IntParam("limit", "query", "at most this many (default 50)", lo=1, hi=500)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, default=str), content_type="application/json")


OBJECT = {"type": "object"}
ROUND_VIEW = {
    "type": "object",
    "required": ["id", "status", "disclosure", "prices"],
    "properties": {"disclosure": {"type": "string", "enum": ["public", "full"]}, "prices": {"type": "array"}},
}


@routes.post(
    "/v1/rounds",
    "runRound",
    "Run one clearing round now (operator only): statistics, audit and the contracts made",
    ok=201,
    response=OBJECT,
    signed=True,
    role=("operator", "trigger clearing rounds"),
    errors=(403, 409),
)
async def trigger_round(request: web.Request, args: Args) -> web.Response:
    """Run one clearing round now (operator only); 201 with the round, its statistics and audit."""
    svc = services(request)
    summary = await svc.rounds.run_round("operator")
    return _json(await svc.rounds.get(summary.round_id, args.who), 201)


@routes.get(
    "/v1/rounds",
    "listRounds",
    "Recent clearing rounds, newest first",
    params=(LIMIT,),
    response=OBJECT,
    errors=(422,),
)
async def list_rounds(request: web.Request, args: Args) -> web.Response:
    """Recent rounds, newest first."""
    return _json({"rounds": await services(request).rounds.list_rounds(limit=args.get(LIMIT, 50))})


@routes.get(
    "/v1/rounds/{id}",
    "getRound",
    "One round: welfare, LP bound, gap, matched devices, build/solve seconds, method, audit checks; class"
    " prices where enough orders contracted; per-order detail for the signed caller's own orders (in full for"
    " the regulator and the operator)",
    params=(ID,),
    response=ROUND_VIEW,
    errors=(404, 422),
)
async def get_round(request: web.Request, args: Args) -> web.Response:
    """One round: statistics (welfare, LP bound, gap, matched devices, times, method), audit, class prices;
    per-order detail only for the caller's own orders (a signed GET), in full for the regulator and operator."""
    return _json(await services(request).rounds.get(args[ID], args.caller))


@routes.get(
    "/v1/market",
    "getMarket",
    "Depth (open demand, free offered devices) and last clearing prices by region x model family",
    response=OBJECT,
)
async def market(request: web.Request, args: Args) -> web.Response:
    """Depth (open demand, free offered devices) and last clearing prices by region x model family."""
    return _json(await services(request).rounds.market(args.caller))


@routes.get(
    "/v1/orders/{id}/fills",
    "getOrderFills",
    "The contracts filling one of the caller's orders",
    params=(ID,),
    response=OBJECT,
    signed=True,
    errors=(403, 404, 422),
)
async def order_fills(request: web.Request, args: Args) -> web.Response:
    """The contracts filling one of the caller's orders."""
    return _json(await services(request).rounds.order_fills(args.who, args[ID]))


@routes.get(
    "/v1/offers/{id}/fills",
    "getOfferFills",
    "The contracts made on one of the caller's offers, and its devices free now",
    params=(ID,),
    response=OBJECT,
    signed=True,
    errors=(403, 404, 422),
)
async def offer_fills(request: web.Request, args: Args) -> web.Response:
    """The contracts made on one of the caller's offers, and its devices free now."""
    return _json(await services(request).rounds.offer_fills(args.who, args[ID]))


async def warm_solver(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: start the solver process now, so the first round pays no start-up (the duties lease,
    exchange/api/duties.py, runs the periodic rounds)."""
    from exchange.api.keys import SERVICES

    svc = app[SERVICES]
    starter = svc.rounds.worker if svc.rounds.worker is not None else svc.rounds.solver
    warm = asyncio.create_task(starter.warm(), name="hetex-solver-warm")
    warm.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failed warm-up retries on first use
    yield
    warm.cancel()


async def stop_rounds(app: web.Application) -> None:
    """on_shutdown (after the listening sockets closed, before requests are drained): start no new
    round; let the running one finish within `shutdown_grace_seconds`, else abandon it; say which."""
    from exchange.api.keys import SERVICES

    svc = app[SERVICES]
    grace = svc.settings.shutdown_grace_seconds
    log.info("shutting down: no longer accepting connections or starting rounds (grace %ss)", grace)
    outcome = await svc.rounds.stop(grace)
    if outcome == "finished":
        log.info("shutting down: the running clearing round finished")
    elif outcome == "abandoned":
        log.warning("shutting down: the running clearing round did not finish within %ss and was abandoned", grace)
