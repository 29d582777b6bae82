"""Console security on SQLite and PostgreSQL: sessions, CSRF, roles, ownership, CSP, escaping, hostile input."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update

from exchange.services.participants import participant_key_id
from exchange.storage.web import WebSession
from tests.exchange.registration_support import Api, api, capacity, order_body  # noqa: F401
from tests.web.consolekit import Browser

PARTY_PAGES = ["/provider", "/buyer", "/regulator", "/operator"]


@pytest.fixture
async def browser(api: Api) -> AsyncIterator[Browser]:  # noqa: F811
    b = Browser(api.base_url)
    yield b
    await b.close()


async def _contract(api: Api) -> tuple[Any, Any, str]:  # noqa: F811
    """A provider with capacity, a buyer with an order, one round: the pending contract's id."""
    cap = await capacity(api)
    buyer = await api.buyer()
    await buyer.submit_order(order_body(), "k1")
    summary = await api.svc.rounds.run_round("test")
    assert summary.contract_ids
    return cap.provider, buyer, summary.contract_ids[0]


async def test_party_pages_without_a_session_redirect_to_sign_in(api: Api, browser: Browser) -> None:  # noqa: F811
    for path in PARTY_PAGES:
        status, _, headers = await browser.get(path)
        assert status == 303 and headers["Location"] == f"/login?next={path}"
    browser.http.cookie_jar.update_cookies({"hetex_session": "forged-token"})
    status, _, _ = await browser.get("/buyer")
    assert status == 303


async def test_a_link_signs_in_once_and_only_to_its_own_role(api: Api, browser: Browser) -> None:  # noqa: F811
    buyer = await api.buyer("Buyer One")
    link = await browser.sign_in(buyer)
    assert link["location"] == "/buyer"
    status, text, _ = await browser.get("/buyer")
    assert status == 200 and "Buyer One" in text
    status, _, _ = await browser.get("/provider")
    assert status == 403
    again = Browser(api.base_url)
    try:
        status, text, _ = await again.post("/login", {"code": link["code"]})
        assert status == 401 and "used or expired" in text
        assert (await again.get("/buyer"))[0] == 303
    finally:
        await again.close()


async def test_expired_and_revoked_sessions_are_refused(api: Api, browser: Browser) -> None:  # noqa: F811
    buyer = await api.buyer()
    first = await browser.sign_in(buyer)
    assert (await browser.get("/buyer"))[0] == 200
    async with api.svc.sessions.begin() as session:
        await session.execute(update(WebSession).where(WebSession.id == first["session_id"]).values(expires_at=1))
    assert (await browser.get("/buyer"))[0] == 303
    second = await browser.sign_in(buyer)
    assert (await browser.get("/buyer"))[0] == 200
    revoked = await buyer.request("POST", f"/console/sessions/{second['session_id']}/revoke", {})
    assert revoked["state"] == "revoked"
    assert (await browser.get("/buyer"))[0] == 303
    listed = await buyer.request("GET", "/console/sessions")
    states = {s["id"]: s["state"] for s in listed["sessions"]}
    assert states[first["session_id"]] == "expired" and states[second["session_id"]] == "revoked"


async def test_an_expired_link_is_refused(api: Api, browser: Browser) -> None:  # noqa: F811
    buyer = await api.buyer()
    link = await browser_link(buyer)
    async with api.svc.sessions.begin() as session:
        await session.execute(update(WebSession).where(WebSession.id == link["session_id"]).values(code_expires_at=1))
    status, _, _ = await browser.post("/login", {"code": link["link"].rsplit("/", 1)[1]})
    assert status == 401


async def browser_link(client: Any) -> dict[str, Any]:
    return await client.request("POST", "/console/sessions", {})


async def test_confirm_needs_csrf_and_same_origin_then_shows_in_the_api(api: Api, browser: Browser) -> None:  # noqa: F811
    provider, _, contract_id = await _contract(api)
    await browser.sign_in(provider)
    path = f"/provider/contracts/{contract_id}/confirm"
    status, text, _ = await browser.post(path, {})
    assert status == 403 and "CSRF" in text
    token = await browser.csrf("/provider")
    status, _, _ = await browser.post(path, {"csrf": "0" * 64})
    assert status == 403
    status, _, _ = await browser.post(path, {"csrf": token}, origin="https://evil.example")
    assert status == 403
    assert (await provider.request("GET", f"/v1/contracts/{contract_id}"))["status"] == "pending"
    status, _, headers = await browser.post(path, {"csrf": token})
    assert status == 303 and headers["Location"].startswith("/provider")
    assert (await provider.request("GET", f"/v1/contracts/{contract_id}"))["status"] == "confirmed"


async def test_unsigned_posts_outside_console_forms_still_need_a_signature(api: Api, browser: Browser) -> None:  # noqa: F811
    buyer = await api.buyer()
    await browser.sign_in(buyer)
    status, _, _ = await browser.post("/v1/orders", {"csrf": "x"})
    assert status in (400, 401)  # API bodies are JSON: a form body is refused at the boundary, before auth
    assert (await buyer.list_orders())["orders"] == []
    status, _, _ = await browser.post("/console/sessions", {})
    assert status == 401


async def test_a_regulator_session_cannot_write(api: Api, browser: Browser) -> None:  # noqa: F811
    _, buyer, contract_id = await _contract(api)
    regulator = await api.regulator()
    await browser.sign_in(regulator)
    token = await browser.csrf("/regulator")
    order_id = (await buyer.list_orders())["orders"][0]["id"]
    for path in (
        "/operator/rounds",
        f"/provider/contracts/{contract_id}/confirm",
        f"/buyer/orders/{order_id}/cancel",
    ):
        status, _, _ = await browser.post(path, {"csrf": token})
        assert status == 403, path
    assert (await buyer.request("GET", f"/v1/contracts/{contract_id}"))["status"] == "pending"
    assert (await buyer.request("GET", f"/v1/orders/{order_id}"))["status"] != "cancelled"


async def test_a_buyer_sees_only_its_own_orders_and_cancels_only_those(api: Api, browser: Browser) -> None:  # noqa: F811
    await capacity(api)
    one, two = await api.buyer("Buyer One"), await api.buyer("Buyer Two")
    mine = await one.submit_order(order_body(), "one-1")
    theirs = await two.submit_order(order_body(quantity_devices=4), "two-1")
    await browser.sign_in(one)
    _, text, _ = await browser.get("/buyer")
    assert mine["id"] in text and theirs["id"] not in text and theirs["id"][:13] not in text
    token = await browser.csrf("/buyer")
    status, _, _ = await browser.post(f"/buyer/orders/{theirs['id']}/cancel", {"csrf": token})
    assert status == 403
    assert (await two.request("GET", f"/v1/orders/{theirs['id']}"))["status"] == "open"
    status, _, _ = await browser.post(f"/buyer/orders/{mine['id']}/cancel", {"csrf": token})
    assert status == 303
    assert (await one.request("GET", f"/v1/orders/{mine['id']}"))["status"] == "cancelled"


async def test_pages_carry_a_strict_csp_and_no_inline_script_or_style(api: Api, browser: Browser) -> None:  # noqa: F811
    await _contract(api)
    provider = await api.provider("Provider P")
    await browser.sign_in(provider)
    for path in ["/", "/login", "/provider"]:
        status, text, headers = await browser.get(path)
        assert status == 200, path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) is None, path
        assert re.search(r"\son[a-z]+\s*=", text) is None, path
        assert re.search(r"\sstyle\s*=", text) is None, path
    status, _, headers = await browser.get("/v1/regions")
    assert status == 200 and "Content-Security-Policy" not in headers  # the API keeps its own headers


async def test_templates_escape_participant_text(api: Api, browser: Browser) -> None:  # noqa: F811
    provider = await api.provider()
    await provider.add_site("CN-SH", "<script>alert(1)</script>")
    await browser.sign_in(provider)
    _, text, _ = await browser.get("/provider")
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


@pytest.mark.parametrize(
    "path",
    [
        "/buyer?model=%00&devices=1e999",
        "/buyer?model=NV-H100-SXM&devices=-1",
        "/buyer?model=NV-H100-SXM&devices=abc",
        "/buyer?model=NV-H100-SXM&hours=NaN",
        "/buyer?family=%F0%9F%92%A5&region=CN-SH",
        "/buyer?model=NV-H100-SXM&region=../../etc",
        "/buyer?model=" + "A" * 5000,
    ],
)
async def test_hostile_quote_input_is_a_4xx_page_naming_the_field(api: Api, browser: Browser, path: str) -> None:  # noqa: F811
    await browser.sign_in(await api.buyer())
    status, text, headers = await browser.get(path)
    assert 400 <= status < 500, (status, text[:300])
    assert headers["Content-Type"].startswith("text/html")
    assert "field:" in text and "Traceback" not in text


async def test_hostile_paths_and_forms_never_500(api: Api, browser: Browser) -> None:  # noqa: F811
    operator = api.client()
    await api.svc.participants.add_by_operator("operator", "Op", operator.key.public.to_base64())
    for path in ["/login/%00", "/login/" + "x" * 300, "/login/a'b\"c<d>", "/operator"]:
        assert (await browser.get(path))[0] < 500, path
    await browser.sign_in(operator)
    token = await browser.csrf("/operator")
    for path in ["/operator?round=junk", "/operator?round=00000000-0000-7000-8000-000000000000", "/regulator"]:
        status, _, _ = await browser.get(path)
        assert 400 <= status < 500, path
    for path in ["/sessions/junk/revoke", "/provider/contracts/not-an-id/confirm", "/buyer/orders/%00/cancel"]:
        status, _, _ = await browser.post(path, {"csrf": token})
        assert 400 <= status < 500, path
    status, _, _ = await browser.post("/login", {"code": "\x00" * 50})
    assert status == 401
    status, _, _ = await browser.post("/login", {})
    assert status == 422


async def test_public_market_figures_equal_the_api(api: Api, browser: Browser) -> None:  # noqa: F811
    await _contract(api)
    status, text, _ = await browser.get("/")
    assert status == 200
    market = await api.client().request("GET", "/v1/market", signed=False)
    for row in market["classes"]:
        if row["last_price"]:
            fen = row["last_price"]["price_fen_per_device_hour"]
            assert f'data-region="{row["region"]}" data-family="{row["family"]}" data-fen="{fen}"' in text
    assert f'data-testid="open-orders">{market["open_orders"]}<' in text
    rounds = await api.client().request("GET", "/v1/rounds", signed=False)
    for r in rounds["rounds"]:
        assert f'data-round="{r["id"]}"' in text
        assert f'data-fen="{r["welfare_fen"]}"' in text


async def test_behind_a_tls_proxy_the_public_origin_is_accepted_and_the_cookie_is_secure(
    db: Any, aiohttp_client: Any, tmp_path: Any
) -> None:
    from exchange.web.keys import WEB_SESSIONS
    from tests.exchange.registration_support import make_api

    proxied = await make_api(db, aiohttp_client, tmp_path, public_base_url="https://console.example")
    key = proxied.client().key
    await proxied.svc.participants.add_by_operator("buyer", "Proxied buyer", key.public.to_base64(), "CN-SH")
    who = await proxied.svc.participants.principal_by_key_id(participant_key_id(key.public))
    assert who is not None
    started = await proxied.http.server.app[WEB_SESSIONS].start(who)
    b = Browser(proxied.base_url)
    try:
        status, _, _ = await b.post("/login", {"code": started.code}, origin="https://other.example")
        assert status == 403
        status, _, headers = await b.post("/login", {"code": started.code}, origin="https://console.example")
        assert status == 303
        cookie = headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    finally:
        await b.close()
