"""Route declarations: what a handler is marked with holds for the registered route."""

from __future__ import annotations

from aiohttp import web

from exchange.api.auth import _REMEMBERS_NONCE, remembers_nonce
from exchange.api.operations import Api, Args


def test_remembers_nonce_holds_on_either_side_of_the_route_decorator() -> None:
    routes = Api("test")

    @remembers_nonce
    @routes.post("/v1/above", "above", "marker applied to the route")
    async def above(request: web.Request, args: Args) -> web.Response:
        return web.Response()

    @routes.post("/v1/below", "below", "marker applied to the handler")
    @remembers_nonce
    async def below(request: web.Request, args: Args) -> web.Response:
        return web.Response()

    @routes.post("/v1/plain", "plain", "no marker")
    async def plain(request: web.Request, args: Args) -> web.Response:
        return web.Response()

    marked = {r.handler.__name__: getattr(r.handler, _REMEMBERS_NONCE, False) for r in routes}  # type: ignore[attr-defined]
    assert marked == {"above": True, "below": True, "plain": False}
