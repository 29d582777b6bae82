"""Async HTTP client for a hetex exchange: signs every request (RFC 9421 hetex profile) and turns
problem+json answers back into domain errors. Used by the CLI, the demo, usage reporting and peers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from exchange.keyid import participant_key_id
from federation.httpsig import sign_request
from federation.keys import SigningKey
from identifiers.errors import (
    AuthenticationError,
    ConflictError,
    GoneError,
    HetexError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

if TYPE_CHECKING:
    import aiohttp


class RemoteError(HetexError):
    """Mixin data of an error answered by the exchange: HTTP status, problem code, reason, full body."""

    code = "remote_error"

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.remote_code = str(problem.get("code", "http_error"))
        self.reason: str | None = problem.get("reason")
        detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        why = f", {self.reason}" if self.reason and self.reason != self.remote_code else ""
        super().__init__(f"{detail} [{status} {self.remote_code}{why}]", field=problem.get("field"))
        self.detail = detail


class RemoteValidationError(RemoteError, ValidationError):
    """422/400 from the exchange."""


class RemoteAuthenticationError(RemoteError, AuthenticationError):
    """401 from the exchange (signature refused; `reason` says why)."""


class RemotePermissionError(RemoteError, PermissionDeniedError):
    """403 from the exchange."""


class RemoteNotFoundError(RemoteError, NotFoundError):
    """404 from the exchange."""


class RemoteConflictError(RemoteError, ConflictError):
    """409 from the exchange."""


class RemoteGoneError(RemoteError, GoneError):
    """410 from the exchange."""


_BY_STATUS: dict[int, type[RemoteError]] = {
    400: RemoteValidationError,
    401: RemoteAuthenticationError,
    403: RemotePermissionError,
    404: RemoteNotFoundError,
    409: RemoteConflictError,
    410: RemoteGoneError,
    422: RemoteValidationError,
}


def remote_error(status: int, problem: Mapping[str, Any]) -> RemoteError:
    """The domain error for an HTTP error status and its problem body."""
    return _BY_STATUS.get(status, RemoteError)(status, problem)


def dumps(data: Any) -> bytes:
    """Compact JSON request body."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class HetexClient:
    """Signed requests to one exchange with one participant key.

    `keyid` defaults to the participant key id (C2SP key id under the name 'hetex'). The client owns an
    aiohttp session unless one is passed; use `async with HetexClient(...) as c:` or call close().
    transport="stdlib" sends with http.client in a worker thread instead of aiohttp: a one-shot CLI command
    then starts without importing aiohttp (about 0.2 s); connection failures are OSError there.
    """

    def __init__(
        self,
        base_url: str,
        key: SigningKey,
        keyid: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        transport: str = "aiohttp",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.keyid = keyid or participant_key_id(key.public)
        self._session = session
        self._own_session = session is None
        self._timeout_seconds = timeout
        self.transport = transport
        self.last_status: int | None = None

    async def __aenter__(self) -> HetexClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (created on first use)."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_seconds))
        return self._session

    async def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """Absolute URL of `path` with query parameters (the exact text that is signed)."""
        url = self.base_url + path
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None})
            if query:
                url += ("&" if "?" in url else "?") + query
        return url

    def sign(self, method: str, url: str, body: bytes) -> dict[str, str]:
        """Content-Digest, Signature-Input and Signature headers for one request (fresh nonce)."""
        return sign_request(method.upper(), url, {}, body, self.key, self.keyid)

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        signed: bool = True,
        raw_body: bytes | None = None,
    ) -> Any:
        """Send one request (signed unless signed=False); parsed JSON answer, or a RemoteError."""
        method = method.upper()
        url = self.url(path, params)
        body = raw_body if raw_body is not None else (b"" if json is None else dumps(json))
        all_headers = dict(headers or {})
        if json is not None or raw_body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        if signed:
            all_headers.update(self.sign(method, url, body))
        status, raw = await self.send(method, url, body, all_headers)
        self.last_status = status
        text = raw.decode("utf-8", errors="replace")
        data: Any = None
        if text:
            try:
                data = _json_loads(text)
            except ValueError:
                data = {"detail": text[:500]}
        if status >= 400:
            raise remote_error(status, data if isinstance(data, dict) else {"detail": str(data)})
        return data

    async def download(self, path: str, *, params: Mapping[str, Any] | None = None) -> bytes:
        """A signed GET whose answer is bytes (an audit bundle); a RemoteError on an error status."""
        url = self.url(path, params)
        status, raw = await self.send("GET", url, b"", self.sign("GET", url, b""))
        self.last_status = status
        if status >= 400:
            try:
                problem = _json_loads(raw.decode("utf-8"))
            except ValueError:
                problem = {"detail": raw[:500].decode("utf-8", errors="replace")}
            raise remote_error(status, problem if isinstance(problem, dict) else {"detail": str(problem)})
        return raw

    async def send(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Send exactly these bytes; the status and the body of the answer."""
        if self.transport == "stdlib":
            return await asyncio.to_thread(send_stdlib, method, url, body, dict(headers), self._timeout_seconds)
        from yarl import URL

        async with self.session.request(method, URL(url, encoded=True), data=body, headers=headers) as resp:
            return resp.status, await resp.read()

    # convenience ---------------------------------------------------------------------------------

    async def register(self, role: str, name: str, home_region: str | None = None) -> dict[str, Any]:
        """Register this client's key as a provider or buyer."""
        body: dict[str, Any] = {"role": role, "name": name, "public_key": self.key.public.to_base64()}
        if home_region is not None:
            body["home_region"] = home_region
        result: dict[str, Any] = await self.request("POST", "/v1/participants", body)
        return result

    async def me(self) -> dict[str, Any]:
        """The participant this key belongs to."""
        result: dict[str, Any] = await self.request("GET", "/v1/participants/me")
        return result

    async def add_site(self, region: str, name: str, **fields: Any) -> dict[str, Any]:
        """Register a site; returns it with its CRI."""
        result: dict[str, Any] = await self.request("POST", "/v1/sites", {"region": region, "name": name, **fields})
        return result

    async def heartbeat(self, site_cri: str) -> dict[str, Any]:
        """Send a site heartbeat."""
        result: dict[str, Any] = await self.request("POST", f"/v1/sites/{site_cri}/heartbeat")
        return result

    async def report_usage_batch(self, envelopes: list[dict[str, Any]]) -> dict[str, Any]:
        """Send many node-signed usage envelopes in one signed request; one result per envelope."""
        result: dict[str, Any] = await self.request("POST", "/v1/usage/batch", {"reports": envelopes})
        return result

    async def add_pool(self, site_cri: str, model: str, devices: int, **fields: Any) -> dict[str, Any]:
        """Declare a pool at a site; returns it with its CRI."""
        body = {"model": model, "devices": devices, **fields}
        result: dict[str, Any] = await self.request("POST", f"/v1/sites/{site_cri}/pools", body)
        return result

    async def post_offer(self, pool_cri: str, devices: int, ask_fen: int, window_start: int, **fields: Any) -> Any:
        """Offer devices of a pool."""
        body = {"pool_cri": pool_cri, "devices": devices, "ask_fen": ask_fen, "window_start": window_start, **fields}
        return await self.request("POST", "/v1/offers", body)

    async def submit_order(self, spec: Mapping[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Submit an order under an idempotency key."""
        result: dict[str, Any] = await self.request(
            "POST", "/v1/orders", dict(spec), headers={"Idempotency-Key": idempotency_key}
        )
        return result

    async def list_orders(self, **filters: Any) -> dict[str, Any]:
        """One page of this buyer's orders."""
        result: dict[str, Any] = await self.request("GET", "/v1/orders", params=filters)
        return result

    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        """Cancel an order."""
        result: dict[str, Any] = await self.request("POST", f"/v1/orders/{order_id}/cancel")
        return result


def send_stdlib(method: str, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """One HTTP/1.1 request with http.client (the signed URL's path and query are sent as they are)."""
    import http.client

    parts = urlsplit(url)
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname or "", parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target or "/", body=body if body or method != "GET" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _json_loads(text: str) -> Any:
    return json.loads(text)
