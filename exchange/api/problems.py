"""One table maps domain errors to RFC 9457 problem+json responses; a middleware applies it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import exc as sa_exc

from identifiers.errors import (
    AuthenticationError,
    ConflictError,
    GoneError,
    HetexError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)

log = logging.getLogger("hetex.api")

PROBLEM_TYPE_BASE = "https://hetex.dev/problems/"
CONTENT_TYPE = "application/problem+json"

# Most specific class first; the first isinstance match decides the status.
STATUS_BY_ERROR: list[tuple[type[HetexError], int]] = [
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (GoneError, 410),
    (ValidationError, 422),
    (UnavailableError, 503),
    (HetexError, 400),
]

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Payload too large",
    408: "Request timeout",
    415: "Unsupported media type",
    499: "Client closed request",
    422: "Invalid input",
    500: "Internal error",
    503: "Service unavailable",
}


def status_for(error: HetexError) -> int:
    """HTTP status for a domain error (one table, no HTTP inside the domain)."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 400


#: Members every problem has; an `extra` of the same name never replaces them.
RESERVED_MEMBERS = frozenset({"type", "title", "status", "code", "detail"})
#: Status counted (metrics) and answered when the client hung up before its request was read (nginx's 499).
CLIENT_CLOSED = 499


def problem_response(status: int, code: str, detail: str, /, **extra: Any) -> web.Response:
    """A problem+json response; `extra` adds members such as `field` or `reason` (reserved names are
    prefixed with `error_`, so a domain detail named `status` cannot clash)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    for key, value in extra.items():
        if value is not None:
            body[f"error_{key}" if key in RESERVED_MEMBERS else key] = value
    headers = {"WWW-Authenticate": 'Signature realm="hetex"'} if status == 401 else None
    return web.Response(status=status, text=json.dumps(body, default=str), content_type=CONTENT_TYPE, headers=headers)


def error_response(error: HetexError) -> web.Response:
    """Problem response for a domain error (a 503 says when to retry: Retry-After)."""
    response = problem_response(status_for(error), error.code, error.message, field=error.field, **error.details)
    if isinstance(error, UnavailableError):
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


class DatabaseBusyError(UnavailableError):
    """The database stayed busy for the whole wait (pool checkout or SQLite's write lock): retry shortly."""

    code = "database_busy"
    retry_after_seconds = 5


def database_busy(exc: sa_exc.SQLAlchemyError) -> DatabaseBusyError | None:
    """The 503 for a wait that ran out (pool timeout, SQLite `database is locked`), or None for other errors."""
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseBusyError("no database connection became free in time; retry shortly")
    if isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc.orig):
        return DatabaseBusyError("the database stayed locked by another writer; retry shortly")
    return None


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def http_problem(exc: web.HTTPException) -> web.Response:
    """Problem+json for an error aiohttp raised (no route, wrong method, body too large...); a 405 keeps
    its `Allow` header and lists the allowed methods."""
    extra: dict[str, Any] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        extra["allowed_methods"] = sorted(exc.allowed_methods)
    response = problem_response(
        exc.status, HTTP_CODES.get(exc.status, "http_error"), exc.reason or TITLES.get(exc.status, "error"), **extra
    )
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into problem+json: domain errors, HTTP errors, and (logged) unexpected ones."""
    try:
        return await handler(request)
    except HetexError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_problem(exc)
    except ConnectionResetError as exc:
        if request.transport is not None and not request.transport.is_closing():
            raise
        # the client hung up (mid-body, mid-request): nothing to answer, nothing went wrong here
        log.info("client closed %s %s before the answer: %s", request.method, request.path, exc)
        return problem_response(CLIENT_CLOSED, "client_closed_request", "the client closed the connection")
    except sa_exc.SQLAlchemyError as exc:
        busy = database_busy(exc)
        if busy is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return problem_response(500, "internal_error", "internal error; see the server log")
        log.warning("database busy on %s %s: %s", request.method, request.path, exc)
        return error_response(busy)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "internal_error", "internal error; see the server log")
