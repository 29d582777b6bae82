"""Response helpers: pydantic models to JSON responses; path ids checked before they reach storage."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel

from identifiers.errors import ValidationError

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """JSON response of a pydantic model."""
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json")


def path_id(request: web.Request, name: str = "id") -> str:
    """A UUID path parameter (lower-case canonical form), or ValidationError naming it."""
    value = request.match_info[name]
    if not _UUID.fullmatch(value):
        raise ValidationError(f"{name}: not an id (UUID, lower-case hex)", field=name)
    return value


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    """An optional query parameter restricted to `choices`."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        raise ValidationError(f"{name} must be one of {', '.join(choices)}", field=name)
    return value
