"""Handlers for buyer orders: submit (Idempotency-Key), read, list, cancel."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, remembers_nonce, require_principal
from exchange.api.keys import services
from exchange.api.parsing import parse_body, query_int
from exchange.api.responses import model_response, path_id, query_choice
from exchange.services.fields import MAX_SAFE_INT
from exchange.services.orders import DEFAULT_PAGE, MAX_PAGE, ORDER_STATUSES, OrderSpec
from exchange.services.registration import BILLING_MODES

routes = web.RouteTableDef()


@routes.post("/v1/orders")
@remembers_nonce
async def submit(request: web.Request) -> web.Response:
    """Submit an order; a retry with the same Idempotency-Key and body returns the original (200).
    The request's nonce is remembered in the order's transaction."""
    who = require_principal(request)
    spec = await parse_body(request, OrderSpec)
    view, created = await services(request).orders.submit(
        who, request.headers.get("Idempotency-Key"), spec, request.get(NONCE_CLAIM)
    )
    return model_response(view, 201 if created else 200)


@routes.get("/v1/orders")
async def list_orders(request: web.Request) -> web.Response:
    """The caller's orders, newest first, with filters and an opaque cursor."""
    who = require_principal(request)
    page = await services(request).orders.list_orders(
        who,
        status=query_choice(request, "status", ORDER_STATUSES),
        billing_mode=query_choice(request, "billing_mode", BILLING_MODES),
        created_after=_opt_int(request, "created_after"),
        created_before=_opt_int(request, "created_before"),
        cursor=request.query.get("cursor") or None,
        limit=query_int(request, "limit", DEFAULT_PAGE, lo=1, hi=MAX_PAGE),
    )
    return model_response(page)


def _opt_int(request: web.Request, name: str) -> int | None:
    return query_int(request, name, -1, lo=0, hi=MAX_SAFE_INT) if request.query.get(name) else None


@routes.get("/v1/orders/{id}")
async def get_order(request: web.Request) -> web.Response:
    """One of the caller's orders."""
    who = require_principal(request)
    return model_response(await services(request).orders.get(who, path_id(request)))


@routes.post("/v1/orders/{id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Cancel an open order."""
    who = require_principal(request)
    return model_response(await services(request).orders.cancel(who, path_id(request)))
