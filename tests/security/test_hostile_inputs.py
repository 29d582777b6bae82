"""Every write endpoint, enumerated from the app's router (a new one without a case here fails the suite),
against hostile input: malformed JSON, deep nesting, NUL and control characters, Unicode digits,
out-of-range integers, wrong types, past windows, junk signatures. Each is answered 4xx problem+json and
leaves the row count of every table unchanged; then the endpoint's valid request is accepted, which proves
the refusals were for the hostile part. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exchange.cli.usage import build_usage_envelope
from exchange.client import HetexClient
from federation.httpsig import sign_request
from federation.keys import SigningKey
from federation.peering import PeerIdentity, new_message
from tests.exchange.registration_support import order_body
from tests.security.kit import HOUR, T0, World, row_counts, send

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEEP = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
MALFORMED = [b'{"a":', b"[1,]", b'{"a":1}{', b"NaN", b"\xff\xfe{}", b'{"a":"\\ud800"}']
JUNK_HEADERS: list[dict[str, str]] = [
    {"Signature-Input": 'sig1=("@method");keyid="x"', "Signature": "sig1=:AAAA:"},
    {"Signature-Input": "junk", "Signature": "junk", "Content-Digest": "junk"},
    {"Signature-Input": 'sig1=("@method" "@target-uri" "content-digest");created=1;keyid="' + "k" * 300 + '"'},
]
BAD_STRINGS = ["\x00", "\x1b[31m", "\x7f"]
BAD_INTS: list[Any] = [2**63, -(2**63) - 1, 2**53, "12", "\u0661\u0662", 12.0, True]
BAD_DECIMALS = ["\u0661.2", " 1.2 ", "1e3", "+1.2", "1,2", "0x1", "NaN", "Infinity", "\uff11.2", 1.2]
WRONG_TYPES: list[Any] = [[1], {"x": "y"}]


@dataclass
class Endpoint:
    """One write route: who calls it, a valid body (None: no body), extra headers, and hostile cases."""

    client: Callable[[World], HetexClient]
    body: Callable[[World], Any] = lambda w: None
    headers: Callable[[World], dict[str, str]] = lambda w: {}
    #: route-specific hostile values (field path -> values), e.g. windows in the past
    special: Callable[[World], dict[str, list[Any]]] = lambda w: {}
    #: peer-signed federation routes: only unsigned/junk-signed cases (no peer in this world)
    peer: bool = False
    ok: tuple[int, ...] = (200, 201, 202)
    skip_leaves: frozenset[str] = field(default_factory=frozenset)


def _now() -> int:
    return int(time.time())


def _provider(w: World) -> HetexClient:
    return w.market.provider


def _buyer(w: World) -> HetexClient:
    return w.market.buyer


def _operator(w: World) -> HetexClient:
    return w.market.operator


def _newcomer(w: World) -> HetexClient:
    return w.newcomer


def _usage(w: World) -> dict[str, Any]:
    p = w.market.provider
    return build_usage_envelope(
        p.key, p.keyid, contract_id=w.contract_id, meter_id="m1", seq=1,
        period_start=T0, period_end=T0 + 600, device_minutes=20, availability_bps=10_000,
    )  # fmt: skip


def _order(w: World) -> dict[str, Any]:
    now = _now()
    return order_body(start_earliest=now, start_latest=now + HOUR, all_or_nothing=False, min_fill_devices=2)


def _scu_order(w: World) -> dict[str, Any]:
    return order_body(quantity_devices=None, quantity_scu="12.5")


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("POST", "/v1/participants"): Endpoint(
        _newcomer,
        lambda w: {"role": "buyer", "name": "Newcomer", "public_key": w.newcomer.key.public.to_base64()},
        skip_leaves=frozenset({"public_key"}),  # a changed key is refused as 401 (not the key that signed)
    ),
    ("POST", "/v1/participants/{id}/status"): Endpoint(_operator, lambda w: {"status": "active"}),
    ("POST", "/v1/sites"): Endpoint(
        _provider,
        lambda w: {"region": "CN-SH", "name": "Node 2", "pue": "1.2", "green_share": "0.5", "interconnect": "RoCE"},
        special=lambda w: {"pue": BAD_DECIMALS, "green_share": BAD_DECIMALS, "name": ["   ", "\u3000"]},
    ),
    ("POST", "/v1/sites/{cri}/heartbeat"): Endpoint(_provider),
    ("DELETE", "/v1/sites/{cri}"): Endpoint(_provider),
    ("POST", "/v1/sites/{cri}/pools"): Endpoint(
        _provider, lambda w: {"model": "NV-H100-SXM", "devices": 8, "memory_gb": 80, "nodes": 1, "devices_per_node": 8}
    ),
    ("DELETE", "/v1/pools/{cri}"): Endpoint(_provider),
    ("POST", "/v1/offers"): Endpoint(
        _provider,
        lambda w: {
            "pool_cri": w.spare_pool_cri,
            "devices": 4,
            "ask_fen": 1500,
            "window_start": _now(),
            "window_end": _now() + 30 * 86400,
            "min_lease_seconds": 3600,
            "billing_modes": ["per_minute"],
        },
        special=lambda w: {"window_end": [_now() - 1, 1_000, 0]},
    ),
    ("PATCH", "/v1/offers/{id}"): Endpoint(
        _provider,
        lambda w: {"ask_fen": 2100, "window_end": _now() + 30 * 86400, "expected_version": 1},
        special=lambda w: {"window_end": [_now() - 1, 1_000]},
    ),
    ("DELETE", "/v1/offers/{id}"): Endpoint(_provider),
    ("POST", "/v1/orders"): Endpoint(
        _buyer,
        _order,
        headers=lambda w: {"Idempotency-Key": "hostile-suite"},
        special=lambda w: {"start_latest": [_now() - 1, 1_000], "start_earliest": [_now() + 2 * HOUR]},
    ),
    ("POST", "/v1/orders/{id}/cancel"): Endpoint(_buyer),
    ("POST", "/v1/contracts/{id}/confirm"): Endpoint(_provider),
    ("POST", "/v1/contracts/{id}/cancel"): Endpoint(
        _buyer, lambda w: {"reason": "plans changed"}, special=lambda w: {"reason": ["   ", "\u3000", ""]}
    ),
    ("POST", "/v1/contracts/{id}/usage"): Endpoint(_provider, _usage),
    ("POST", "/v1/usage/batch"): Endpoint(_provider, lambda w: {"reports": [_usage(w)]}),
    ("POST", "/v1/settlements/run"): Endpoint(_operator, lambda w: {"as_of": T0}),
    ("POST", "/v1/audit/exports"): Endpoint(
        lambda w: w.regulator,
        lambda w: {"from": 0, "to": 2_000_000_000, "region": "CN-SH", "model_family": "Hopper", "since_sizes": [1]},
    ),
    ("POST", "/v1/rounds"): Endpoint(_operator),
    ("POST", "/v1/federation/summaries"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/orders"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/holds/{id}/commit"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/holds/{id}/release"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/mirror"): Endpoint(_operator, peer=True),
    #: this world has no peer: the valid request reaches the service and is answered 404 unknown_peer
    ("POST", "/v1/peers/{authority}/reverify"): Endpoint(_operator, ok=(404,)),
    ("POST", "/v1/federation/hub/summaries"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/hub/demand"): Endpoint(_operator, peer=True),
    ("POST", "/v1/federation/hub/routes"): Endpoint(_operator, peer=True),
}
#: a second order body shape (SCU quantity) for the decimal-string cases
SCU_ORDER = Endpoint(_buyer, _scu_order, headers=lambda w: {"Idempotency-Key": "hostile-scu"},
                     special=lambda w: {"quantity_scu": BAD_DECIMALS})  # fmt: skip


#: web-console form routes (HTML answers, session + CSRF, not JSON): their hostile cases live in
#: tests/web/test_console_security.py (named here, checked to exist)
CONSOLE_FORMS: dict[tuple[str, str], str] = {
    ("POST", "/login"): "test_hostile_paths_and_forms_never_500",
    ("POST", "/logout"): "test_expired_and_revoked_sessions_are_refused",
    ("POST", "/sessions/{id}/revoke"): "test_hostile_paths_and_forms_never_500",
    ("POST", "/operator/rounds"): "test_a_regulator_session_cannot_write",
    ("POST", "/provider/contracts/{id}/confirm"): "test_hostile_paths_and_forms_never_500",
    ("POST", "/buyer/orders/{id}/cancel"): "test_hostile_paths_and_forms_never_500",
    ("POST", "/console/sessions"): "test_unsigned_posts_outside_console_forms_still_need_a_signature",
    ("POST", "/console/sessions/{id}/revoke"): "test_expired_and_revoked_sessions_are_refused",
}


def write_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every state-changing route the app serves."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method in WRITE_METHODS and route.resource is not None
    }


def concrete(w: World, template: str, suffix: str = "") -> str:
    """The path template filled with the world's resources (the caller owns each); `suffix` is appended
    to the parameter (hostile path values)."""
    if template.startswith("/v1/sites/"):
        value = w.site_cri
    elif template.startswith("/v1/pools/"):
        value = w.pool_cri
    elif template.startswith("/v1/offers/"):
        value = w.offer_id
    elif template.startswith("/v1/orders/"):
        value = w.open_order_id
    elif template == "/v1/contracts/{id}/confirm":
        value = w.unconfirmed_id
    elif template.startswith("/v1/contracts/"):
        value = w.contract_id
    elif template.startswith("/v1/peers/"):
        value = "PX"
    elif template.startswith("/v1/participants/"):
        value = w.regulator_id
    else:
        value = "0190a000-0000-7000-8000-000000000000"
    for placeholder in ("{cri}", "{id}", "{authority}"):
        template = template.replace(placeholder, value + suffix)
    return template


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, scalar) of a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A deep copy of `value` with the leaf at `path` set to `new`."""
    out = json.loads(json.dumps(value))
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = new
    return out


def hostile_bodies(w: World, ep: Endpoint) -> Iterator[tuple[str, bytes]]:
    """(label, body bytes) of every hostile case for one endpoint."""
    for raw in MALFORMED:
        yield f"malformed {raw[:12]!r}", raw
    yield "deep nesting", DEEP
    yield "deep array", b"[" * 100_000 + b"]" * 100_000
    base = ep.body(w)
    if base is None:  # no body expected: any junk in it is refused, never ignored
        for bad in BAD_STRINGS[:2]:
            yield f"stray body {bad!r}", json.dumps({"x": bad}).encode()
        yield "stray huge int", b'{"x":' + str(2**64).encode() + b"}"
        return
    special = ep.special(w)
    for path, value in leaves(base):
        name = ".".join(map(str, path))
        if name in ep.skip_leaves:
            continue
        if isinstance(value, str):
            for bad in BAD_STRINGS:
                yield f"{name}={bad!r}", json.dumps(replaced(base, path, value + bad)).encode()
            for bad in [*WRONG_TYPES, 5]:
                yield f"{name}={bad!r}", json.dumps(replaced(base, path, bad)).encode()
        elif isinstance(value, bool):
            for bad in ["true", 1, 0, "yes", None, []]:
                yield f"{name}={bad!r}", json.dumps(replaced(base, path, bad)).encode()
        elif isinstance(value, int):
            for bad in BAD_INTS + WRONG_TYPES:
                yield f"{name}={bad!r}", json.dumps(replaced(base, path, bad)).encode()
    for name, values in special.items():
        for bad in values:
            yield f"{name}={bad!r} (special)", json.dumps(replaced(base, (name,), bad)).encode()
    yield "unknown member", json.dumps({**base, "zz_unknown": 1}).encode()
    yield "NUL in a key", json.dumps({**base, "a\x00": 1}).encode()
    yield "not an object", json.dumps([base]).encode()


async def expect_refused(w: World, method: str, path: str, body: bytes, label: str, **kw: Any) -> None:
    """One hostile request: 4xx problem+json and every table's row count unchanged."""
    client = kw.pop("client", None)
    before = await row_counts(w.api)
    answer = await send(w.api, method, path, body, client=client, **kw)
    assert answer.is_problem, f"{method} {path} [{label}]: {answer.status} {answer.content_type} {answer.body!r:.300}"
    after = await row_counts(w.api)
    if client is not None:  # a verified signature's nonce is consumed even when the request is refused
        before.pop("seen_nonces"), after.pop("seen_nonces")
    assert after == before, f"{method} {path} [{label}] wrote rows: {before} -> {after}"


async def attack(w: World, method: str, template: str, ep: Endpoint) -> int:
    """Every hostile case against one endpoint; then its valid request is accepted. Returns the case count."""
    path = concrete(w, template)
    headers = ep.headers(w)
    n = 0
    stranger = HetexClient(w.api.base_url, SigningKey.generate(), session=w.api.http.session)
    valid = b"" if ep.body(w) is None else json.dumps(ep.body(w)).encode()
    for junk in JUNK_HEADERS:
        await expect_refused(w, method, path, valid, "junk signature", headers={**headers, **junk})
        n += 1
    await expect_refused(w, method, path, valid, "unsigned", headers=headers)
    n += 1
    if ep.peer:
        for label, body in hostile_bodies(w, ep):
            await expect_refused(w, method, path, body, label, headers=headers)
            n += 1
        return n
    if method != "POST" or template != "/v1/participants":
        await expect_refused(w, method, path, valid, "unregistered key", headers=headers, client=stranger)
        n += 1
    for label, body in hostile_bodies(w, ep):
        await expect_refused(w, method, path, body, label, headers=headers, client=ep.client(w))
        n += 1
    if "{" in template:  # control characters and Unicode digits in the path parameter
        for bad in ("%00", "%1B", "%D9%A1%D9%A2"):
            bad_path = concrete(w, template, bad)
            await expect_refused(w, method, bad_path, valid, f"path+{bad}", headers=headers, client=ep.client(w))
            n += 1
    answer = await send(w.api, method, path, valid, client=ep.client(w), headers=headers)
    assert answer.status in ep.ok, f"control: the valid {method} {path} was refused: {answer}"
    if template == "/v1/audit/exports":  # the job shares the test's one connection: let it finish
        await w.api.svc.audit.wait(answer.body["id"])
    return n


async def test_hostile_input_on_every_write_route(world: World) -> None:
    routes = write_routes(world.api.http.app)
    from tests.web import test_console_security

    assert all(hasattr(test_console_security, name) for name in CONSOLE_FORMS.values())
    routes -= set(CONSOLE_FORMS)
    missing = routes - set(ENDPOINTS)
    assert not missing, f"write routes without a hostile-input case in {__name__}: {sorted(missing)}"
    # destructive endpoints last, so the resources they remove stay for the others
    order = sorted(routes, key=lambda r: (r[0] == "DELETE", r[1].endswith("cancel"), r))
    cases = 0
    for method, template in order:
        cases += await attack(world, method, template, ENDPOINTS[(method, template)])
    cases += await attack(world, "POST", "/v1/orders", SCU_ORDER)
    print(f"{cases} hostile requests refused with nothing written")
    assert cases > 500


HOLD = "0190a000-0000-7000-8000-000000000000"


def _peer_bodies(now: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per peer route: message type and a well-formed body (refused later for business reasons at most)."""
    order = {"origin_order_id": "o-1", "buyer_id": "b-1", "models": ["NV-H100-SXM"], "regions": ["CN-SH"]}
    order |= {"limits": {"*": 100}, "devices_max": 2, "devices_min": 1, "start_at": now, "end_at": now + HOUR}
    record = {"record_type": "usage", "record_id": "r-1", "contract_id": HOLD, "envelope": {"payload": "e30="}}
    return {
        "/v1/federation/orders": ("order_offer", {"order": order}),
        f"/v1/federation/holds/{HOLD}/commit": ("hold_commit", {"hold_id": HOLD, "contracts": [{"a": "b"}]}),
        f"/v1/federation/holds/{HOLD}/release": ("hold_release", {"hold_id": HOLD}),
        "/v1/federation/mirror": ("mirror", {"records": [record]}),
        "/v1/federation/hub/summaries": (
            "supply_summary",
            {"summary": {"payload": "e30=", "signatures": [{"a": "b"}]}},
        ),
        "/v1/federation/hub/demand": ("hub_demand", {"orders": [{"id": "o-1", "seq": 1, "quantity_devices": 2}]}),
        "/v1/federation/hub/routes": ("hub_routes", {"routes": [{"order_id": "o", "owner": "X", "devices": 1}]}),
    }


async def test_peer_signed_hostile_bodies(world: World) -> None:
    """Hostile bodies signed by a real peer key: refused 4xx problem+json before any row is written."""
    svc = world.api.svc
    key = SigningKey.generate()
    peer = PeerIdentity("PX", "px.hetex.test/log", key.public, "http://127.0.0.1:9")
    await svc.federation.peers.add_peer(peer.url, key.public.to_base64(), peer.authority, origin=peer.origin)
    now = _now()
    cases = 0
    for path, (kind, base) in _peer_bodies(now).items():
        hostile: list[tuple[str, Any]] = []
        for leaf, value in leaves(base):
            name = ".".join(map(str, leaf))
            if isinstance(value, str):
                hostile += [(f"{name}+{bad!r}", replaced(base, leaf, value + bad)) for bad in BAD_STRINGS]
                hostile += [(f"{name}={bad!r}", replaced(base, leaf, bad)) for bad in [5, [1]]]
            elif isinstance(value, int):
                hostile += [(f"{name}={bad!r}", replaced(base, leaf, bad)) for bad in BAD_INTS + WRONG_TYPES]
        hostile.append(("deep", nest_deep(base)))
        for label, body in hostile:
            message = new_message(kind, peer.authority, svc.federation.ctx.authority, body, sent_at=now)
            raw = json.dumps(message).encode()
            url = world.api.base_url + path
            headers = sign_request("POST", url, {}, raw, key, peer.key_id)
            before = await row_counts(world.api)
            answer = await send(world.api, "POST", path, raw, headers=headers)
            assert answer.is_problem, f"POST {path} [{label}]: {answer.status} {answer.body!r:.300}"
            after = await row_counts(world.api)
            before.pop("seen_nonces"), after.pop("seen_nonces")  # a verified peer signature's nonce is consumed
            assert after == before, f"POST {path} [{label}] wrote rows"
            cases += 1
    # control: the well-formed order offer, signed the same way, is verified and answered (a hold or a refusal)
    kind, base = _peer_bodies(now)["/v1/federation/orders"]
    raw = json.dumps(new_message(kind, peer.authority, svc.federation.ctx.authority, base, sent_at=now)).encode()
    url = world.api.base_url + "/v1/federation/orders"
    headers = sign_request("POST", url, {}, raw, key, peer.key_id)
    answer = await send(world.api, "POST", "/v1/federation/orders", raw, headers=headers)
    assert answer.status == 200 and answer.body["status"] in ("held", "refused"), answer
    assert cases > 50


def nest_deep(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with a 40-deep array added (beyond the depth cap)."""
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    return {**body, "deep": deep}
