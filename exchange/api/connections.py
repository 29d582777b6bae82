"""Connection hygiene for `hetex serve`: a cap on concurrent connections per client address, a deadline
for the request head (slowloris), a deadline for reading the request body, bodies only as sent (no content
coding), and malformed requests refused as problem+json and logged as counted one-liners, not tracebacks."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from exchange.api.problems import TITLES, problem_response
from exchange.services.refusals import RefusalLog

log = logging.getLogger("hetex.connections")
#: malformed requests refused by the HTTP parser: anyone can send them, so a counted line per reason and minute
MALFORMED = RefusalLog(log, "malformed request")

HEAD_END = b"\r\n\r\n"


@dataclass
class ConnectionGuard:
    """Wraps the aiohttp server's protocol factory: refuses a connection beyond `max_per_address` open ones
    from the same address, and aborts a connection whose first request head is not complete within
    `head_timeout` seconds. Counts what it refused, for metrics and tests."""

    factory: Callable[[], asyncio.Protocol]
    max_per_address: int
    head_timeout: float
    active: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    timed_out: int = 0

    def __call__(self) -> asyncio.Protocol:
        inner = self.factory()
        if type(inner) is RequestHandler:
            inner.__class__ = ProblemRequestHandler  # same slots; only handle_error differs
        return _GuardedProtocol(self, inner)

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`, or refuse it when the address is at its cap."""
        if self.active[address] >= self.max_per_address:
            self.refused += 1
            return False
        self.active[address] += 1
        return True

    def release(self, address: str) -> None:
        """A counted connection from `address` closed."""
        self.active[address] -= 1
        if self.active[address] <= 0:
            del self.active[address]


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol, answering the errors it handles itself (a malformed request line or header,
    before any middleware) as problem+json; aiohttp still logs them and closes the connection."""

    __slots__ = ()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The same refusal as aiohttp's, as problem+json. A client's malformed request is logged as a counted
        line naming the parser's reason (not its text, which may hold header values), not a traceback."""
        if status < 500 and isinstance(exc, HttpProcessingError):
            MALFORMED.refused(type(exc).__name__, f"{status} from {request.remote}")
            if request.writer.output_size > 0:  # as aiohttp: a response already started cannot be replaced
                raise ConnectionError("Response is sent already, cannot send another response with the error message")
        else:
            super().handle_error(request, status, exc, message)  # logs; refuses when a response already started
        code = "bad_request" if status < 500 else "internal_error"
        detail = (message or "").strip() if status < 500 else "internal error; see the server log"
        response = problem_response(status, code, detail or TITLES.get(status, "error"))
        response.force_close()
        return response


class _GuardedProtocol(asyncio.Protocol):
    """Delegates to aiohttp's protocol once admitted; aborts the connection on a late request head."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.address: str | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.guard.admit(address):
            transport.abort()
            return
        self.address, self.transport = address, transport
        self.timer = asyncio.get_running_loop().call_later(self.guard.head_timeout, self._head_late)
        self.inner.connection_made(transport)

    def _head_late(self) -> None:
        self.timer = None
        self.guard.timed_out += 1
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if HEAD_END in seen:
                self.timer.cancel()
                self.timer = None
            else:
                self.tail = seen[-(len(HEAD_END) - 1) :]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return  # refused: never handed to aiohttp
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.guard.release(self.address)
        self.address = None
        self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_per_address: int,
        head_timeout: float,
        sock: socket.socket | None = None,
    ):
        super().__init__(runner, host, port)
        self.max_per_address, self.head_timeout, self.sock = max_per_address, head_timeout, sock
        self.guard: ConnectionGuard | None = None
        self.listener: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen, with the aiohttp protocol factory wrapped in the guard."""
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        self.guard = ConnectionGuard(server, self.max_per_address, self.head_timeout)
        loop = asyncio.get_running_loop()
        if self.sock is not None:  # bound before any database access (`hetex serve`)
            self.listener = await loop.create_server(self.guard, sock=self.sock)
        else:
            self.listener = await loop.create_server(self.guard, self._host, self._port)
        self._server = self.listener

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self.listener is not None and self.listener.sockets
        return int(self.listener.sockets[0].getsockname()[1])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refuse(code: str, detail: str, field: str) -> web.Response:
    """A 400 problem+json refusal of the request's body that closes the connection (its rest is not read)."""
    response = problem_response(400, code, detail, field=field)
    response.force_close()
    return response


def body_timeout_middleware(timeout: float) -> Any:
    """Middleware: the request body must arrive within `timeout` seconds (408 problem+json, connection
    closed); the body is buffered, so later reads (signature check, handler) return it at once. A body with a
    content coding is refused before it is read (400, field Content-Encoding): the signed Content-Digest is
    over the bytes as sent, and decoding would let a small request expand without bound."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if coding not in ("", "identity"):
            return refuse("content_encoding_unsupported", "send bodies without a content coding", "Content-Encoding")
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout):
                    await request.read()
            except HttpProcessingError as exc:  # a body the HTTP parser could not take (bad chunking, ...)
                MALFORMED.refused(type(exc).__name__, f"{exc.code} from {request.remote}")
                return refuse("malformed_body", "the request body could not be read as sent", "body")
            except TimeoutError:
                response = problem_response(408, "body_timeout", f"request body not received within {timeout:g} s")
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                if request.transport is not None:
                    request.transport.close()  # no lingering read of a body that is not coming
                return response
        return await handler(request)

    return middleware
