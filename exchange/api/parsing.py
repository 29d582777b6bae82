"""Request parsing shared by handlers: JSON bodies into pydantic models, query ints, path ints."""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import pydantic
from aiohttp import web

from exchange.api.boundary import parsed_body
from identifiers.errors import ValidationError

M = TypeVar("M", bound=pydantic.BaseModel)

#: An integer as the API accepts it in a path or query: ASCII digits only (no sign, spaces, `_`, Unicode digits).
_ASCII_UINT: Final = re.compile(r"[0-9]{1,19}", re.ASCII)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def model_from_data(data: Any, model: type[M]) -> M:
    """Validate parsed JSON into `model`, raising ValidationError that names the first bad field."""
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
    """The request body, already parsed and bounded by the boundary middleware, validated into `model`."""
    return model_from_data(parsed_body(request), model)


def ascii_int(raw: str, name: str, *, lo: int = 0, hi: int = 2**53 - 1) -> int:
    """A non-negative integer written in ASCII digits within [lo, hi], or a ValidationError naming it."""
    if not _ASCII_UINT.fullmatch(raw):
        raise ValidationError(f"{name} must be an integer written in ASCII digits", field=name)
    value = int(raw)
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return value
