"""Handlers for buyer orders: submit (Idempotency-Key), read, list, cancel."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, remembers_nonce, require_principal
from exchange.api.keys import services
from exchange.api.params import ChoiceParam, IntParam, TextParam
from exchange.api.parsing import parse_body
from exchange.api.responses import model_response, path_id
from exchange.services.fields import MAX_SAFE_INT
from exchange.services.orders import DEFAULT_PAGE, MAX_PAGE, ORDER_STATUSES, OrderSpec
from exchange.services.registration import BILLING_MODES

routes = web.RouteTableDef()

LIST_QUERY = (
    ChoiceParam("status", "query", "only orders in this state", choices=ORDER_STATUSES),
    ChoiceParam("billing_mode", "query", "only this billing mode", choices=BILLING_MODES),
    IntParam("created_after", "query", "created at or after (epoch s)", lo=0, hi=MAX_SAFE_INT),
    IntParam("created_before", "query", "created before (epoch s)", lo=0, hi=MAX_SAFE_INT),
    TextParam(
        "cursor",
        "query",
        "next_cursor of the previous page, unchanged (another value is 400 bad_cursor)",
        pattern=r"^[A-Za-z0-9_-]+={0,2}$",
        max_length=200,
        hint="a cursor (pass next_cursor unchanged)",
    ),
    IntParam("limit", "query", f"page size (default {DEFAULT_PAGE})", lo=1, hi=MAX_PAGE),
)
STATUS, BILLING_MODE, CREATED_AFTER, CREATED_BEFORE, CURSOR, LIMIT = LIST_QUERY


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
        status=STATUS.parse(request),
        billing_mode=BILLING_MODE.parse(request),
        created_after=CREATED_AFTER.parse(request),
        created_before=CREATED_BEFORE.parse(request),
        cursor=CURSOR.parse(request),
        limit=LIMIT.value(request, DEFAULT_PAGE),
    )
    return model_response(page)


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
