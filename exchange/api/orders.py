"""Handlers for buyer orders: submit (Idempotency-Key), read, list, cancel."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import NONCE_CLAIM, remembers_nonce
from exchange.api.keys import services
from exchange.api.operations import Api, Args
from exchange.api.params import ID, ChoiceParam, IntParam, TextParam
from exchange.api.responses import model_response
from exchange.services.fields import MAX_SAFE_INT
from exchange.services.orders import DEFAULT_PAGE, MAX_PAGE, ORDER_STATUSES, OrderPage, OrderSpec, OrderView
from exchange.services.registration import BILLING_MODES

routes = Api("orders")

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
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "retry key: same key + same body returns the first order (200); a different body is 409",
}


@remembers_nonce
@routes.post(
    "/v1/orders",
    "submitOrder",
    "Submit an order (201); a retry with the same Idempotency-Key and body returns the original (200)",
    ok=201,
    response=OrderView,
    body=OrderSpec,
    signed=True,
    errors=(403, 409, 413, 422),
    headers=(IDEMPOTENCY,),
    extra={"200": "the order first submitted under this Idempotency-Key"},
)
async def submit(request: web.Request, args: Args) -> web.Response:
    """Submit an order; a retry with the same Idempotency-Key and body returns the original (200).
    The request's nonce is remembered in the order's transaction."""
    view, created = await services(request).orders.submit(
        args.who, request.headers.get("Idempotency-Key"), args.body(OrderSpec), request.get(NONCE_CLAIM)
    )
    return model_response(view, 201 if created else 200)


@routes.get(
    "/v1/orders",
    "listOrders",
    "The caller's orders, newest first, filtered, with an opaque cursor",
    response=OrderPage,
    signed=True,
    errors=(403, 422),
    params=LIST_QUERY,
)
async def list_orders(request: web.Request, args: Args) -> web.Response:
    """The caller's orders, newest first, with filters and an opaque cursor."""
    page = await services(request).orders.list_orders(
        args.who,
        status=args.get(STATUS),
        billing_mode=args.get(BILLING_MODE),
        created_after=args.get(CREATED_AFTER),
        created_before=args.get(CREATED_BEFORE),
        cursor=args.get(CURSOR),
        limit=args.get(LIMIT, DEFAULT_PAGE),
    )
    return model_response(page)


@routes.get(
    "/v1/orders/{id}",
    "getOrder",
    "One of the caller's orders",
    params=(ID,),
    response=OrderView,
    signed=True,
    errors=(403, 404, 422),
)
async def get_order(request: web.Request, args: Args) -> web.Response:
    """One of the caller's orders."""
    return model_response(await services(request).orders.get(args.who, args[ID]))


@routes.post(
    "/v1/orders/{id}/cancel",
    "cancelOrder",
    "Cancel an open order",
    params=(ID,),
    response=OrderView,
    signed=True,
    errors=(403, 404, 409, 422),
)
async def cancel(request: web.Request, args: Args) -> web.Response:
    """Cancel an open order."""
    return model_response(await services(request).orders.cancel(args.who, args[ID]))
