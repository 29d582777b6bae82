"""Response helpers: pydantic models to JSON responses; path ids checked before they reach storage."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from exchange.api.params import ID, uuid_param


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """JSON response of a pydantic model."""
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json")


def path_id(request: web.Request, name: str = "id") -> str:
    """A UUID path parameter (lower-case canonical form), or ValidationError naming it."""
    return (ID if name == "id" else uuid_param(name, "path", "")).value(request)
