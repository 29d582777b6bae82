"""RFC 9421 HTTP Message Signatures (Ed25519) with RFC 9530 Content-Digest, framework neutral.

hetex profile: one signature labelled `sig1` covering ("@method" "@target-uri" "content-digest") with
parameters created, keyid, alg="ed25519" and nonce; `Content-Digest: sha-512=:<base64>:`. A server
refuses a request whose |now - created| exceeds the window (300 s) and remembers nonces for that window.

`@target-uri` is the absolute URL of the request: the server must rebuild it from scheme, host, path
and query; behind a reverse proxy it uses its configured public base URL (never a client-supplied
Host/X-Forwarded-* header) followed by the request path and query. Functions here take `url` as given.
The signature base is built by the `http-message-signatures` library; this module adds the profile
checks and maps every refusal to one SignatureError reason.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import heapq
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    algorithms,
)
from http_message_signatures._url import parse_url
from http_sf.compat import InnerList, Item

from federation.errors import SignatureError
from federation.keys import SigningKey, VerifyKey

LABEL = "sig1"
ALG = "ed25519"
COMPONENTS: tuple[str, ...] = ("@method", "@target-uri", "content-digest")
DEFAULT_MAX_SKEW = 300
_DIGEST_ALGS = {"sha-512": hashlib.sha512, "sha-256": hashlib.sha256}


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest field value with SHA-512: `sha-512=:<base64>:`."""
    return "sha-512=:" + base64.b64encode(hashlib.sha512(body).digest()).decode("ascii") + ":"


class _Headers:
    """Header field lines (name, value) in order, as the library's message interface wants."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs: list[tuple[str, str]] = list(pairs)

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.pairs))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.pairs)

    def __setitem__(self, name: str, value: str) -> None:
        self.__delitem__(name)
        self.pairs.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.pairs = [(n, v) for n, v in self.pairs if n.lower() != name.lower()]

    def get(self, name: str) -> str | None:
        """All field lines of `name` joined with ', ' (None when absent)."""
        values = [v for n, v in self.pairs if n.lower() == name.lower()]
        return ", ".join(v.strip() for v in values) if values else None


def _header_pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Field lines from a dict, a multidict (items() repeats names) or a list of pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


@dataclass
class _Message:
    method: str
    url: str
    headers: _Headers


class _Verifier(HTTPMessageVerifier):
    """Library verifier whose time checks are done by verify_request (with an injectable clock)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


@dataclass(frozen=True)
class SignedMessage:
    """Result of sign_message: the header values and the exact signature base that was signed."""

    signature_input: str
    signature: str
    signature_base: bytes


def sign_message(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    key: SigningKey,
    keyid: str,
    *,
    components: Iterable[str],
    created: int,
    nonce: str | None = None,
    label: str = LABEL,
    include_alg: bool = True,
) -> SignedMessage:
    """General RFC 9421 Ed25519 signing of any covered components (headers must already be present)."""
    msg = _Message(method, url, _Headers(_header_pairs(headers)))
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519)
    prepared = signer.prepare(
        msg,
        key_id=keyid,
        created=datetime.datetime.fromtimestamp(created, tz=datetime.UTC),
        nonce=nonce,
        label=label,
        include_alg=include_alg,
        covered_component_ids=tuple(components),
        use_existing_digest="content-digest" in msg.headers,
    )
    signer.apply(msg, prepared, key.sign(prepared.signature_base))
    sig_input, sig = msg.headers.get("Signature-Input"), msg.headers.get("Signature")
    assert sig_input is not None and sig is not None
    return SignedMessage(sig_input, sig, prepared.signature_base)


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    key: SigningKey,
    keyid: str,
    *,
    created: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Sign a request with the hetex profile; return the headers to add (Content-Digest, Signature-Input,
    Signature). A fresh random nonce and the current time are used unless given."""
    digest = content_digest(body)
    pairs = [(k, v) for k, v in _header_pairs(headers) if k.lower() not in _OWN_HEADERS]
    pairs.append(("Content-Digest", digest))
    signed = sign_message(
        method,
        url,
        pairs,
        key,
        keyid,
        components=COMPONENTS,
        created=int(time.time()) if created is None else created,
        nonce=secrets.token_urlsafe(16) if nonce is None else nonce,
    )
    return {
        "Content-Digest": digest,
        "Signature-Input": signed.signature_input,
        "Signature": signed.signature,
    }


_OWN_HEADERS = frozenset({"content-digest", "signature-input", "signature"})


@dataclass(frozen=True)
class VerifiedSignature:
    """What a verified request signature says: who (keyid), when (created) and its nonce."""

    keyid: str
    created: int
    nonce: str
    label: str = LABEL


def _reject_duplicate_label(key: str, context: str) -> None:
    if context == "dictionary":
        raise ValueError(f"duplicate signature label {key!r}")


def _parse_dict(value: str, name: str) -> dict[str, Any]:
    try:
        parsed: Any = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=_reject_duplicate_label
        )
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SignatureError("signature_malformed", f"{name} is not a structured dictionary") from exc
    if not isinstance(parsed, dict):
        raise SignatureError("signature_malformed", f"{name} is not a structured dictionary")
    return parsed


_SHA512_ONLY = re.compile(r"sha-512=:([A-Za-z0-9+/]{86}==):")


def _check_digest(value: str, body: bytes) -> None:
    one = _SHA512_ONLY.fullmatch(value.strip())
    if one is not None:  # the profile's own form: one sha-512 member (what every hetex client sends)
        if not hmac.compare_digest(base64.b64decode(one.group(1)), hashlib.sha512(body).digest()):
            raise SignatureError("digest_mismatch", "Content-Digest does not match the body")
        return
    try:
        parsed: Any = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SignatureError("signature_malformed", "Content-Digest is not a structured dictionary") from exc
    if not isinstance(parsed, dict) or "sha-512" not in parsed:
        raise SignatureError("digest_missing", "Content-Digest has no sha-512 member")
    for alg, (member, _params) in parsed.items():
        if alg not in _DIGEST_ALGS:
            continue
        if not isinstance(member, bytes):
            raise SignatureError("signature_malformed", "Content-Digest member is not a byte sequence")
        if not hmac.compare_digest(member, _DIGEST_ALGS[alg](body).digest()):
            raise SignatureError("digest_mismatch", "Content-Digest does not match the body")


@dataclass(frozen=True)
class ParsedSignature:
    """A request signature whose headers passed the hetex profile checks (parse_request_signature),
    waiting for its key: pass it to verify_parsed. Parsing once lets a caller look the key up by
    `keyid` (e.g. in a database) between the two steps without parsing the headers again."""

    method: str
    url: str
    keyid: str
    created: int
    nonce: str
    label: str
    components: list[tuple[Any, dict[str, Any]]]
    params: dict[str, Any]
    signature: bytes
    digest_value: str
    headers: _Headers


def parse_request_signature(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    now: int | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
) -> ParsedSignature:
    """First half of verify_request: the checks that need no key (headers present and well formed, one
    signature, nonce, covered components, |now - created| <= max_skew, Content-Digest present)."""
    hdrs = _Headers(_header_pairs(headers))
    sig_input_value, sig_value = hdrs.get("Signature-Input"), hdrs.get("Signature")
    if sig_input_value is None or sig_value is None:
        raise SignatureError("signature_missing", "Signature and Signature-Input headers are required")
    inputs = _parse_dict(sig_input_value, "Signature-Input")
    sigs = _parse_dict(sig_value, "Signature")
    if len(inputs) != 1 or inputs.keys() != sigs.keys():
        raise SignatureError("signature_malformed", "exactly one signature label, the same in both headers")
    label = next(iter(inputs))
    components, params = inputs[label]
    signature, _sig_params = sigs[label]
    if not isinstance(components, list) or not isinstance(signature, bytes):
        raise SignatureError("signature_malformed", "Signature-Input must be an inner list, Signature bytes")
    keyid, created = params.get("keyid"), params.get("created")
    if not isinstance(keyid, str) or not keyid:
        raise SignatureError("signature_malformed", "keyid parameter is required")
    if type(created) is not int:
        raise SignatureError("signature_malformed", "created parameter is required (integer)")
    if "alg" in params and params["alg"] != ALG:
        raise SignatureError("signature_malformed", f"alg must be {ALG}")
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise SignatureError("nonce_missing", "nonce parameter is required")
    covered = {item for item, item_params in components if isinstance(item, str) and not item_params}
    missing = [c for c in COMPONENTS if c not in covered]
    if missing:
        raise SignatureError("component_missing", f"signature must cover {', '.join(missing)}", missing=missing)
    now = int(time.time()) if now is None else now
    if abs(now - created) > max_skew:
        raise SignatureError("signature_expired", f"created is more than {max_skew} s from now")
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or now > expires):
        raise SignatureError("signature_expired", "signature has expired")
    digest_value = hdrs.get("Content-Digest")
    if digest_value is None:
        raise SignatureError("digest_missing", "Content-Digest header is required")
    return ParsedSignature(method, url, keyid, created, nonce, label, components, params, signature, digest_value, hdrs)


# The library's verifier; its time checks are ours (parse_request_signature, with an injectable clock).
_VERIFIER = _Verifier(signature_algorithm=algorithms.ED25519, key_resolver=None)


_FAST_PARAMS = frozenset({"created", "keyid", "alg", "nonce", "expires"})


def _sf_param_value(value: Any) -> str | None:
    """RFC 8941 serialization of an integer or string parameter value (None: leave it to the library)."""
    if type(value) is int:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return None


def _fast_signature_base(parsed: ParsedSignature) -> bytes | None:
    """The signature base of the hetex profile's common case, built directly: exactly the three covered
    components without parameters, only the profile's signature parameters (integer or string values), one
    Content-Digest field line. None for anything else (the library builds it then). Equal to the library's
    output (tests/federation/test_httpsig_fast.py compares them)."""
    if [c for c, item_params in parsed.components if not item_params] != list(COMPONENTS):
        return None
    if len(parsed.components) != len(COMPONENTS):
        return None
    digest_lines = [v for n, v in parsed.headers.pairs if n.lower() == "content-digest"]
    if len(digest_lines) != 1:
        return None
    params = []
    for name, value in parsed.params.items():
        text = _sf_param_value(value)
        if name not in _FAST_PARAMS or text is None:
            return None
        params.append(f";{name}={text}")
    if parsed.method != parsed.method.upper() or parsed.method == "OPTIONS":
        return None
    try:  # the library's own strict URL grammar: the same refusals, and the same parts
        url = parse_url(parsed.url)
    except HTTPMessageSignaturesException:
        return None
    target = f"{url.scheme}://{url.authority}{url.path or '/'}{url.query_suffix}"
    lines = (
        f'"@method": {parsed.method}\n'
        f'"@target-uri": {target}\n'
        f'"content-digest": {digest_lines[0].strip()}\n'
        f'"@signature-params": ("@method" "@target-uri" "content-digest"){"".join(params)}'
    )
    return lines.encode()


def _signature_base(parsed: ParsedSignature) -> bytes:
    """The RFC 9421 signature base: the profile's common case built directly (_fast_signature_base), anything
    else by the http-message-signatures library."""
    fast = _fast_signature_base(parsed)
    return fast if fast is not None else _library_signature_base(parsed)


def _library_signature_base(parsed: ParsedSignature) -> bytes:
    """The RFC 9421 signature base, built by the http-message-signatures library from the already
    parsed Signature-Input member (its public verify() would parse both headers again, twice)."""
    for name in parsed.params:
        if name not in _VERIFIER.signature_metadata_parameters:
            raise SignatureError("signature_malformed", f"unexpected signature parameter {name!r}")
    node = InnerList()
    for value, item_params in parsed.components:
        item = Item(value)
        item.params.update(item_params)
        node.append(item)
    # only the covered fields go to the library's component resolver (it indexes every header it gets)
    fields = {str(v).lower() for v, _p in parsed.components if isinstance(v, str) and not v.startswith("@")}
    msg = _Message(parsed.method, parsed.url, _Headers(p for p in parsed.headers.pairs if p[0].lower() in fields))
    try:
        base, _node, _elements = _VERIFIER._build_signature_base(
            msg, covered_component_ids=list(node), signature_params=parsed.params
        )
    except (HTTPMessageSignaturesException, KeyError, ValueError, TypeError) as exc:
        raise SignatureError("signature_malformed", f"signature cannot be checked: {exc}") from exc
    return str(base).encode()


def verify_parsed(parsed: ParsedSignature, body: bytes, key: VerifyKey | None) -> VerifiedSignature:
    """Second half of verify_request: key known, Ed25519 signature valid, body matches Content-Digest."""
    if key is None:
        raise SignatureError("unknown_key", f"unknown key {parsed.keyid!r}", keyid=parsed.keyid)
    base = _signature_base(parsed)
    try:
        key.crypto_key.verify(parsed.signature, base)
    except CryptoInvalidSignature as exc:
        raise SignatureError("signature_invalid", "signature does not verify") from exc
    _check_digest(parsed.digest_value, body)
    return VerifiedSignature(keyid=parsed.keyid, created=parsed.created, nonce=parsed.nonce, label=parsed.label)


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    resolve_key: Callable[[str], VerifyKey | None],
    *,
    now: int | None = None,
    max_skew: int = DEFAULT_MAX_SKEW,
    nonce_cache: NonceCache | None = None,
) -> VerifiedSignature:
    """Verify a request signed with the hetex profile; return who signed it or raise SignatureError.

    Checks, in order: signature headers present and well formed (one signature), nonce present,
    required components covered, |now - created| <= max_skew, Content-Digest present, key known,
    Ed25519 signature valid, body matches Content-Digest, and (when `nonce_cache` is given) the nonce
    was not seen before. Replay protection across processes is the caller's nonce store.
    """
    parsed = parse_request_signature(method, url, headers, now=now, max_skew=max_skew)
    verified = verify_parsed(parsed, body, resolve_key(parsed.keyid))
    if nonce_cache is not None:
        nonce_cache.check_and_remember(verified.keyid, verified.nonce, verified.created, now)
    return verified


class NonceCache:
    """In-memory bounded nonce memory for one process: a (keyid, nonce) pair is refused while its
    signature could still be accepted (until created + ttl). When full, the entry expiring soonest is
    forgotten first; use a shared store (the database) when several processes serve requests."""

    def __init__(self, ttl: int = DEFAULT_MAX_SKEW, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, tuple[str, str]]] = []
        self._lock = threading.Lock()

    def _purge(self, now: int) -> None:
        while self._heap and (self._heap[0][0] < now or len(self._expiry) > self.max_entries):
            expiry, item = heapq.heappop(self._heap)
            if self._expiry.get(item) == expiry:
                del self._expiry[item]

    def check_and_remember(self, keyid: str, nonce: str, created: int, now: int | None = None) -> None:
        """Remember the nonce, or raise SignatureError('nonce_replayed') if it is still remembered."""
        now = int(time.time()) if now is None else now
        item = (keyid, nonce)
        expiry = max(created, now) + self.ttl
        with self._lock:
            self._purge(now)
            if item in self._expiry:
                raise SignatureError("nonce_replayed", "nonce was already used", keyid=keyid)
            self._expiry[item] = expiry
            heapq.heappush(self._heap, (expiry, item))
            self._purge(now)

    def __len__(self) -> int:
        return len(self._expiry)
