"""Request parsing shared by handlers: JSON bodies into pydantic models, query ints, path ids."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
from aiohttp import web

from exchange.api.params import IntParam
from identifiers.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)

MAX_BODY_BYTES = 1 << 20


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def model_from_json(raw: bytes, model: type[M]) -> M:
    """Parse JSON bytes into `model`, raising ValidationError that names the first bad field."""
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError("request body too large", field="body")
    try:
        data = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        field = _loc(first["loc"])
        raise ValidationError(
            f"{field}: {first['msg']}",
            field=field,
            errors=[{"field": _loc(e["loc"]), "message": e["msg"]} for e in errors],
        ) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read the request body (already buffered by the signature check when signed) into `model`."""
    return model_from_json(await request.read(), model)


def query_int(request: web.Request, name: str, default: int, *, lo: int = 0, hi: int = 10_000) -> int:
    """An integer query parameter within [lo, hi] (`default` when absent; an empty value is refused)."""
    return IntParam(name, "query", "", lo=lo, hi=hi).value(request, default)
