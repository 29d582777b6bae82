"""Request authentication: RFC 9421 signatures (hetex profile) checked before any handler runs.

Every state-changing request (anything but GET/HEAD/OPTIONS) must be signed; a signed GET is verified
too and identifies the caller for "own resources" reads. The key comes from the participants table
(key id -> public key); POST /v1/participants is the one request signed by a not-yet-known key, verified
with the key in its own body (proof of possession). Nonces are remembered in `seen_nonces` for the
window, so a replay is refused by every process sharing the database. Refusals are 401 problem+json
with a `reason` (federation.errors.SIGNATURE_REASONS).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from exchange.api.boundary import PARSED_BODY, REGISTRATION_PATH, SELF_VERIFIED_PREFIXES
from exchange.api.keys import services
from exchange.services.nonces import NonceClaim
from exchange.services.participants import participant_key_id
from exchange.services.principals import Principal, SignedRequest
from federation.errors import KeyFormatError, SignatureError
from federation.httpsig import parse_request_signature, verify_parsed
from federation.keys import VerifyKey

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# SELF_VERIFIED_PREFIXES (boundary): POSTs there are verified by their handlers. GETs there go through the
# ordinary participant authentication: a peer exchange's key is a participant of role peer, so its signed reads
# are verified here like any other.
KEY_CACHE_SECONDS = 60.0
#: how long a key is cached while this process hears every participant change (PostgreSQL NOTIFY, key_changes):
#: then an entry is dropped when its participant changes, and the time only bounds memory of idle keys
KEY_CACHE_HEARD_SECONDS = 3600.0
KEY_CACHE_MAX_ENTRIES = 1_000_000

PRINCIPAL = web.RequestKey("principal", Principal)
SIGNED_REQUEST = web.RequestKey("signed_request", SignedRequest)
NONCE_CLAIM = web.RequestKey("nonce_claim", NonceClaim)
_REMEMBERS_NONCE = "_hetex_remembers_nonce"
_NONCE_FREE = "_hetex_nonce_free"

H = TypeVar("H", bound=Callable[..., Any])


def remembers_nonce(handler: H) -> H:
    """Mark a handler whose service remembers the request's nonce (request[NONCE_CLAIM]) in the same
    transaction as the request's effects, instead of the auth layer writing it in a transaction first.

    Why this is safe: the nonce row commits with the effects or not at all. A request refused before or
    inside that transaction (validation, role, a database error) leaves nothing, so its replay is
    refused for the same reason, or (after a transient failure) performs the very request the signer
    sent, still within the signature window and guarded by the service's own idempotency (orders: the
    Idempotency-Key). If the handler returns without having remembered the claim, the auth layer
    remembers it before answering, so a successful request's nonce is always remembered."""
    setattr(handler, _REMEMBERS_NONCE, True)
    return handler


@dataclass
class KeyCache:
    """Positive cache key id -> (participant, key) for a short time, saving a query per request. A participant's
    status change drops its entry at once: in this process through ParticipantService.key_changed, in the other
    processes on the same PostgreSQL through the NOTIFY of migration 0950 (listen_for_key_changes)."""

    ttl: float = KEY_CACHE_SECONDS
    enabled: bool = True
    _entries: dict[str, tuple[float, Principal, VerifyKey]] = field(default_factory=dict)

    def get(self, key_id: str) -> tuple[Principal, VerifyKey] | None:
        """The cached participant and key, if fresh."""
        hit = self._entries.get(key_id)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1], hit[2]

    def put(self, principal: Principal, key: VerifyKey) -> None:
        """Remember a participant's key (not while `enabled` is off)."""
        if not self.enabled:
            return
        if len(self._entries) >= KEY_CACHE_MAX_ENTRIES:
            self._entries.clear()
        self._entries[principal.key_id] = (time.monotonic() + self.ttl, principal, key)

    def drop(self, key_id: str) -> None:
        """Forget a key at once (its participant's status changed)."""
        self._entries.pop(key_id, None)

    def hearing_changes(self) -> None:
        """Every participant change is now heard (drop() is called for it): keep keys for longer."""
        self.ttl = max(self.ttl, KEY_CACHE_HEARD_SECONDS)

    def disable(self) -> None:
        """Forget everything and cache nothing more (the change notifications can no longer be heard)."""
        self.enabled = False
        self._entries.clear()


def nonce_free(handler: H) -> H:
    """Mark a handler whose effect a replay cannot repeat, so its request's nonce is never remembered (no write
    to seen_nonces): the site heartbeat, one UPDATE that only moves the site's liveness forward to the signed
    `created` (specs/signing.md 7 says why a replay inside the window is harmless). The signature is verified
    exactly as for every other request, nonce parameter included."""
    setattr(handler, _NONCE_FREE, True)
    return handler


KEY_CACHE = web.AppKey("key_cache", KeyCache)


def target_uri(request: web.Request, public_base_url: str | None, *, dev: bool = False) -> str:
    """The @target-uri a request for this exchange is signed for: the configured public base URL + path and
    query, never the client's Host header (a request signed for another exchange must not verify here).
    Only a development server (`dev`, no base URL) takes the absolute URL as received."""
    if public_base_url:
        return public_base_url.rstrip("/") + request.raw_path
    if dev:
        return str(request.url)
    raise SignatureError(
        "signature_invalid",
        "this exchange has no public base URL (HETEX_PUBLIC_BASE_URL), so no signed request can be bound to it",
    )


def registration_key(data: Any, keyid: str) -> VerifyKey | None:
    """The key in a (parsed) registration body, if it is the key named by `keyid` (proof of possession)."""
    try:
        key = VerifyKey.from_base64(data["public_key"])
    except (ValueError, TypeError, KeyError, KeyFormatError):
        return None
    return key if participant_key_id(key) == keyid else None


def is_registration(request: web.Request) -> bool:
    """True for POST /v1/participants."""
    return request.method == "POST" and request.path == REGISTRATION_PATH


async def authenticate(request: web.Request, *, defer_nonce: bool = False) -> NonceClaim:
    """Verify the request signature and remember its nonce (unless `defer_nonce`: then the handler's
    service does, see remembers_nonce); store the caller and the nonce claim on the request."""
    svc = services(request)
    body = await request.read()
    url = target_uri(request, svc.settings.public_base_url, dev=svc.settings.dev)
    headers = list(request.headers.items())
    # parse and check the signature headers once; the key is looked up by the parsed keyid
    parsed = parse_request_signature(request.method, url, headers, max_skew=svc.settings.signature_window_seconds)
    keyid = parsed.keyid
    principal: Principal | None = None
    key: VerifyKey | None = None
    if is_registration(request):
        key = registration_key(request.get(PARSED_BODY), keyid)
    elif len(keyid) <= 64:
        cache = request.app[KEY_CACHE]
        hit = cache.get(keyid)
        if hit is None:
            found = await svc.participants.principal_by_key_id(keyid)
            if found is not None:
                hit = found, VerifyKey.from_base64(found.public_key)
                cache.put(*hit)
        if hit is not None:
            principal, key = hit
    verified = verify_parsed(parsed, body, key)
    claim = NonceClaim(verified.keyid, verified.nonce, verified.created)
    if not defer_nonce:
        await svc.participants.nonce_store.remember_now(svc.sessions, claim)
    request[NONCE_CLAIM] = claim
    if principal is not None:
        request[PRINCIPAL] = principal
    request[SIGNED_REQUEST] = SignedRequest(
        method=request.method,
        target_uri=url,
        body=body,
        content_digest=request.headers.get("Content-Digest", ""),
        signature_input=request.headers.get("Signature-Input", ""),
        signature=request.headers.get("Signature", ""),
    )
    return claim


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate signed requests; refuse unsigned state-changing ones (401 before the handler)."""
    if request.match_info.http_exception is not None:
        return await handler(request)
    if request.method not in SAFE_METHODS and request.path.startswith(SELF_VERIFIED_PREFIXES):
        return await handler(
            request
        )  # peer exchanges: verified by the federation service (peer keys, not participants)
    signed = "Signature" in request.headers or "Signature-Input" in request.headers
    if request.method in SAFE_METHODS and not signed:
        return await handler(request)
    if not signed and getattr(request.match_info.handler, "_hetex_browser_form", False):
        return await handler(request)  # console form: session cookie + CSRF token (exchange.web.browser)
    route = request.match_info.handler
    free = getattr(route, _NONCE_FREE, False)
    claim = await authenticate(request, defer_nonce=free or getattr(route, _REMEMBERS_NONCE, False))
    response = await handler(request)
    if not claim.remembered and not free:
        svc = services(request)
        await svc.participants.nonce_store.remember_now(svc.sessions, claim)
    return response


def require_principal(request: web.Request) -> Principal:
    """The authenticated participant, or 401 when the request was not signed by a known participant."""
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise SignatureError("signature_missing", "this endpoint needs a request signed by a registered participant")
    return principal


def signed_request(request: web.Request) -> SignedRequest:
    """The verified signed request (for the registration record), or 401 when unsigned."""
    signed = request.get(SIGNED_REQUEST)
    if signed is None:
        raise SignatureError("signature_missing", "this endpoint needs a signed request")
    return signed
