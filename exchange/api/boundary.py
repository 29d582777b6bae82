"""The input boundary: every request body, path and query value is checked here before anything else runs.

One bounded JSON parser (`load_json`: size cap, nesting-depth cap, no NaN/Infinity, no lone surrogates, no
integers beyond what RFC 8785 represents, no NUL or other control characters in any string or key) applied to
every body of a state-changing request, and a refusal of control characters in path and query values.
`boundary_middleware` runs before authentication: it checks path and query values, and parses the body only
when authentication needs it (`parse_before_auth`: a registration carries its key in its body; federation
handlers verify peer signatures from it). Every other body is parsed by `body_middleware` after its signature
verified, so an unauthenticated request costs the header checks, not a JSON parse of up to 1 MiB.
Handlers read the parsed body with `parsed_body`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import pydantic_core
from aiohttp import web

from identifiers.errors import HetexError

MAX_BODY_BYTES: Final = 1 << 20
#: Deepest nesting of arrays/objects a request body may have (the deepest real body, an order, has 4).
MAX_JSON_DEPTH: Final = 32
#: Largest magnitude of a JSON integer (RFC 8785 and every JSON peer represent it exactly).
MAX_JSON_INT: Final = 2**53 - 1
#: C0 controls except TAB, LF and CR; DEL. NUL is never accepted anywhere.
CONTROL_CHARS: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Path and query values carry no control characters at all.
URL_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: POST here is signed by the key its own body carries (proof of possession): authentication reads the body.
REGISTRATION_PATH: Final = "/v1/participants"
#: Paths whose POST handlers verify request signatures themselves (exchange.api.federation: peer exchange keys,
#: destination-bound messages), from the parsed body.
SELF_VERIFIED_PREFIXES: Final = ("/v1/federation/",)
PARSED_BODY: Final = web.RequestKey("parsed_body", object)
_EMPTY: Final = object()


class MalformedInputError(HetexError):
    """Input refused before its meaning is looked at (400, not 422): not JSON, too deep, bad characters."""

    code = "malformed_input"


class BodyTooDeepError(MalformedInputError):
    """A JSON body nests arrays/objects deeper than MAX_JSON_DEPTH."""

    code = "body_too_deep"


class BadCharacterError(MalformedInputError):
    """A string (body, path or query) holds NUL or another control character."""

    code = "control_character"


class JsonIntegerRangeError(MalformedInputError):
    """A JSON integer beyond +-(2^53 - 1)."""

    code = "integer_out_of_range"


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "body"


def _has_problem(data: Any, max_depth: int) -> bool:
    """Fast pass: does `data` break a rule (depth, characters, integers)? Scalars are checked in place and
    only containers are stacked, so a clean 1 MiB body costs a few json.loads (see specs/input.md)."""
    search = CONTROL_CHARS.search
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        items = value.items() if type(value) is dict else enumerate(value)
        if depth >= max_depth:
            return True
        for key, item in items:
            if type(key) is str and search(key):
                return True
            kind = type(item)
            if kind is str:
                if search(item):
                    return True
            elif kind is int:
                if not -MAX_JSON_INT <= item <= MAX_JSON_INT:
                    return True
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
    return False


def check_json_value(data: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Depth, string characters and integer range of a parsed JSON value; the error names the field."""
    if _has_problem([data], max_depth + 1):  # wrapped, so a bare scalar body is checked too
        _locate(data, max_depth)


def _locate(data: Any, max_depth: int) -> None:
    """Slow pass with paths, run only when the fast pass found something: raise naming the field."""
    stack: list[tuple[Any, list[str | int]]] = [(data, [])]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            if len(where) >= max_depth:
                raise BodyTooDeepError(f"JSON nests deeper than {max_depth} levels", field=_path(where))
            for key, item in value.items():
                if CONTROL_CHARS.search(key):
                    field = _path(where)
                    raise BadCharacterError(f"{field}: a key holds a control character", field=field)
                stack.append((item, [*where, key]))
        elif isinstance(value, list):
            if len(where) >= max_depth:
                raise BodyTooDeepError(f"JSON nests deeper than {max_depth} levels", field=_path(where))
            stack.extend((item, [*where, i]) for i, item in enumerate(value))
        elif isinstance(value, str):
            if CONTROL_CHARS.search(value):
                field = _path(where)
                raise BadCharacterError(f"{field}: NUL and control characters are not allowed", field=field)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
            field = _path(where)
            raise JsonIntegerRangeError(f"{field}: integer out of range (|n| <= 2^53 - 1)", field=field)


def load_json(raw: bytes) -> Any:
    """Parse a request body with bounds (size, depth, characters, integers); ValidationError naming the field."""
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedInputError("request body too large", field="body")
    try:
        data = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if "recursion limit" in message:
            raise BodyTooDeepError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels", field="body") from None
        raise MalformedInputError(f"request body is not valid JSON: {message}", field="body") from None
    check_json_value(data)
    return data


def parsed_body(request: web.Request) -> Any:
    """The request body as checked by the boundary (None when the body was empty)."""
    value = request.get(PARSED_BODY, _EMPTY)
    if value is _EMPTY:
        raise RuntimeError("boundary_middleware did not run for this request")
    return value


def check_url_values(request: web.Request) -> None:
    """Refuse control characters in path parameters and query names/values, naming the parameter."""
    for name, value in request.match_info.items():
        if URL_CONTROL_CHARS.search(value):
            raise BadCharacterError(f"{name}: control characters are not allowed", field=name)
    for name, value in request.query.items():
        if URL_CONTROL_CHARS.search(name) or URL_CONTROL_CHARS.search(value):
            raise BadCharacterError(f"{name!r}: control characters are not allowed", field=name)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _console_form(request: web.Request) -> bool:
    """A web-console form post (exchange/web parses and bounds its own forms); API bodies are always JSON."""
    return request.content_type in FORM_TYPES and not request.path.startswith("/v1/")


def _has_body(request: web.Request) -> bool:
    """A state-changing request whose body the boundary parses (web-console forms parse their own)."""
    return request.method not in SAFE_METHODS and not _console_form(request)


def parse_before_auth(request: web.Request) -> bool:
    """Whether authentication needs the parsed body: a signed registration (its key is in its body), a
    federation POST (verified by its handler), anything outside the API. An unsigned registration is
    refused by authentication without it."""
    path = request.path
    if not path.startswith("/v1/") or path.startswith(SELF_VERIFIED_PREFIXES):
        return True
    if path == REGISTRATION_PATH and request.method == "POST":
        return "Signature" in request.headers or "Signature-Input" in request.headers
    return False


async def _parse_body(request: web.Request) -> None:
    raw = await request.read()
    request[PARSED_BODY] = load_json(raw) if raw else None


@web.middleware
async def boundary_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before authentication: check path/query values; parse the body only when authentication needs it."""
    if request.match_info.http_exception is not None:
        return await handler(request)
    if request.path.startswith("/v1/"):
        check_url_values(request)  # web-console pages check their own query values and answer with a page
    if _has_body(request) and parse_before_auth(request):
        await _parse_body(request)
    return await handler(request)


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: parse the body of a state-changing request that boundary_middleware left."""
    if request.match_info.http_exception is None and _has_body(request) and PARSED_BODY not in request:
        await _parse_body(request)
    return await handler(request)
