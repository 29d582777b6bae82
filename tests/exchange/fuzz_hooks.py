"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.exchange.fuzz_hooks): sign every request with RFC 9421
exactly as exchange.client does, with a registered participant of the role the operation needs."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

import schemathesis
from requests import PreparedRequest
from requests.auth import AuthBase

from exchange.services.participants import participant_key_id
from federation.httpsig import sign_request
from federation.keys import SigningKey

#: JSON file {role: hex seed} written by the test that registered those participants
KEYS_ENV = "HETEX_FUZZ_KEYS"

OPERATOR_PATHS = ("/v1/rounds", "/v1/settlements", "/v1/federation/")
PROVIDER_PATHS = ("/v1/sites", "/v1/pools", "/v1/offers", "/v1/contracts")
BUYER_PATHS = ("/v1/orders", "/v1/participants/me")


def role_for(method: str, path: str) -> str:
    """The role whose key signs a request to `path` (the one the operation is meant for)."""
    if method == "POST" and path == "/v1/participants":
        return "new"
    if path.startswith("/v1/audit"):
        return "regulator"
    if path.startswith(OPERATOR_PATHS):
        return "operator"
    if path.startswith(PROVIDER_PATHS):
        return "provider"
    return "buyer"


class Rfc9421Signer(AuthBase):
    """requests auth: signs the prepared request (final URL and body bytes) like HetexClient.sign."""

    def __init__(self, keys: dict[str, SigningKey]) -> None:
        self.keys = keys

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        method, url = (request.method or "GET").upper(), request.url or ""
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        role = role_for(method, urlsplit(url).path)
        key = SigningKey.generate() if role == "new" else self.keys[role]
        if role == "new":
            body = _with_public_key(body, key)
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        request.headers.update(sign_request(method, url, {}, body, key, participant_key_id(key.public)))
        return request


def _with_public_key(body: bytes, key: SigningKey) -> bytes:
    """A registration body carrying the signing key (proof of possession); other bodies unchanged."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    given = data.get("public_key") if isinstance(data, dict) else None
    if not isinstance(given, str) or not re.fullmatch(r"[A-Za-z0-9+/]{43}=", given):
        return body  # no key or a schema-invalid one: sent as generated (the server must refuse it)
    return json.dumps({**data, "public_key": key.public.to_base64()}).encode()


def _load() -> Rfc9421Signer | None:
    path = os.environ.get(KEYS_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        seeds = json.load(fh)
    return Rfc9421Signer({role: SigningKey.from_seed(bytes.fromhex(seed)) for role, seed in seeds.items()})


SIGNER = _load()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Sign the request about to be sent."""
    if SIGNER is not None:
        kwargs["auth"] = SIGNER


@schemathesis.auth(refresh_interval=None, retry_on=[])
class SignatureAuth:
    """Marks the case as carrying real credentials; the signature itself is made at send time
    (before_call), over the final URL and body bytes. Probes that strip credentials go unsigned."""

    def get(self, case: Any, context: Any) -> str | None:
        """A marker when keys are configured."""
        return "rfc9421" if SIGNER is not None else None

    def set(self, case: Any, data: str, context: Any) -> None:
        """A placeholder Signature header, replaced by the real signature when sent."""
        case.headers = {**(case.headers or {}), "Signature": "sig1=:c2lnbmVkIGF0IHNlbmQ=:"}
