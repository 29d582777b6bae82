"""The console in a real headless Chromium (Debian's package, driven by Playwright; no browser download).

On the demo's market (the app `hetex serve` builds, SQLite): the public page shows the API's prices, depth and
rounds; each party signs in through `hetex login --web` and sees only its own rows; a contract confirmed on
the page is confirmed in the API; the regulator cannot post; every page passes axe-core with no serious or
critical violation; screenshots of every page land in $HETEX_SCREENSHOTS or the test's temp dir.
One more test loads the public and buyer pages on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exchange.demo import Demo
from tests.exchange.registration_support import Api, api, capacity, order_body  # noqa: F401

CHROMIUM = Path(os.environ.get("HETEX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
REPO = Path(__file__).resolve().parents[2]


def _need_chromium() -> None:
    """Skip with the reason when Chromium or Playwright is missing; under CI=true that is a failure."""
    missing = None
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "Playwright for Python is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing)
        pytest.skip(missing)


def _chromium_path() -> Path:
    return CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or "chromium")


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium browser."""
    _need_chromium()
    from playwright.async_api import async_playwright

    path = _chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go."""
    out = Path(os.environ.get("HETEX_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


async def cli_link(base_url: str, key_pem: bytes, tmp: Path, name: str) -> str:
    """`hetex login --web --json` with the participant's key file: the one-time link it prints."""
    key_file = tmp / f"{name}.pem"
    key_file.write_bytes(key_pem)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exchange",
        "login",
        "--web",
        "--json",
        "--url",
        base_url,
        "--key",
        str(key_file),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return str(json.loads(out)["link"])


async def sign_in(context: Any, link: str) -> Any:
    """Open the one-time link in a fresh page and press Sign in."""
    page = await context.new_page()
    await page.goto(link)
    await page.get_by_test_id("sign-in").click()
    await page.wait_for_load_state()
    return page


async def axe_check(page: Any) -> list[dict[str, Any]]:
    """axe-core in the page: the serious and critical violations (id, impact, nodes)."""
    await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


async def test_console_in_chromium_on_the_demo_market(chromium: Any, shots: Path, tmp_path: Path) -> None:
    # the demo market has one or two orders per class: let the public view show those prices
    demo = Demo(tmp_path / "demo", settings={"disclosure_min_orders": 1})
    (tmp_path / "demo").mkdir()
    await demo.start_server()
    try:
        await demo.register_providers()
        await demo.add_staff()
        await demo.submit_orders(1)
        await demo.clearing_round(1)
        await demo.submit_orders(2)
        await demo.clearing_round(2)
        base = demo.base_url
        assert demo.svc is not None
        checkpoint = await demo.svc.ledger.checkpoint()
        anon = demo.client()
        market = await anon.request("GET", "/v1/market", signed=False)
        rounds = (await anon.request("GET", "/v1/rounds", signed=False))["rounds"]
        context = await chromium.new_context(viewport={"width": 1280, "height": 900})
        problems: dict[str, Any] = {}

        # public market: prices, charts, depth and rounds as the API has them
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        response = await page.goto(base + "/")
        assert response is not None and response.status == 200
        priced = {
            (r["region"], r["family"]): r["last_price"]["price_fen_per_device_hour"]
            for r in market["classes"]
            if r["last_price"]
        }
        assert priced, "the demo's rounds priced no class"
        cells = page.get_by_test_id("heat-table").get_by_test_id("price")
        assert await cells.count() == len(priced)
        for i in range(await cells.count()):
            cell = cells.nth(i)
            key = (await cell.get_attribute("data-region"), await cell.get_attribute("data-family"))
            assert await cell.get_attribute("data-fen") == priced[key]
        assert await page.get_by_test_id("chart").count() >= 1
        assert await page.locator("[data-testid=chart] svg polyline").count() >= 1
        assert await page.get_by_test_id("open-orders").inner_text() == str(market["open_orders"])
        assert await page.get_by_test_id("depth-row").count() >= 1
        assert await page.get_by_test_id("round-row").count() == len(rounds)
        for r in rounds:
            row = page.locator(f'[data-round="{r["id"]}"]')
            assert await row.get_by_test_id("round-contracts").inner_text() == str(r["contracts"])
        shown = (await page.get_by_test_id("checkpoint").inner_text()).strip()
        assert shown == checkpoint.note.strip()
        await page.screenshot(path=str(shots / "market.png"), full_page=True)
        await page.screenshot(path=str(shots / "market-top.png"))  # the first screen (README)
        problems["/"] = await axe_check(page)
        assert not errors, errors  # no CSP violation or script error in the console

        # buyer: signs in through the CLI challenge, sees its orders only, asks for a quote
        buyers = list(demo.buyers.values())
        buyer, other = buyers[0], buyers[1]
        page = await sign_in(context, await cli_link(base, buyer.client.key.to_pem(), tmp_path, "buyer"))
        assert page.url == base + "/buyer"
        assert buyer.name in await page.get_by_test_id("who").inner_text()
        mine = (await buyer.client.list_orders(limit=100))["orders"]
        theirs = (await other.client.list_orders(limit=100))["orders"]
        assert await page.get_by_test_id("order-row").count() == len(mine)
        html = await page.content()
        assert all(o["id"] not in html for o in theirs)
        await page.get_by_label("Model 型号").select_option("NV-H100-SXM")
        await page.get_by_label("Devices").fill("8")
        await page.get_by_test_id("quote-submit").click()
        await page.wait_for_load_state()
        assert await page.get_by_test_id("quote-table").count() == 1
        assert await page.get_by_test_id("quote-row").count() >= 1
        await page.screenshot(path=str(shots / "buyer.png"), full_page=True)
        problems["/buyer"] = await axe_check(page)

        # provider: confirms a pending contract on the page; the API shows it confirmed
        pending = [
            p
            for p in demo.providers
            if any(c["status"] == "pending" for c in (await p.client.request("GET", "/v1/contracts"))["items"])
        ]
        provider = pending[0]
        page = await sign_in(context, await cli_link(base, provider.client.key.to_pem(), tmp_path, "provider"))
        assert page.url == base + "/provider"
        assert await page.get_by_test_id("heartbeat").first.inner_text() == "live"
        row = page.get_by_test_id("contract-row").filter(has=page.get_by_test_id("confirm")).first
        contract_id = await row.get_attribute("data-contract")
        await row.get_by_test_id("confirm").click()
        await page.wait_for_load_state()
        status = page.locator(f'[data-contract="{contract_id}"]').get_by_test_id("contract-status")
        assert (await status.inner_text()).strip().startswith("confirmed")
        assert (await provider.client.request("GET", f"/v1/contracts/{contract_id}"))["status"] == "confirmed"
        await page.screenshot(path=str(shots / "provider.png"), full_page=True)
        problems["/provider"] = await axe_check(page)

        # regulator: flows and exports; a post from its page is refused
        assert demo.regulator is not None and demo.operator is not None
        reg = demo.regulator.client
        job = await reg.request("POST", "/v1/audit/exports", {"from": demo.t0 - 3600, "to": demo.t0 + 86_400})
        await demo.svc.audit.wait(job["id"])
        page = await sign_in(context, await cli_link(base, reg.key.to_pem(), tmp_path, "regulator"))
        assert page.url == base + "/regulator"
        assert await page.get_by_test_id("flow").count() >= 1
        assert await page.get_by_test_id("export-row").count() == 1
        async with page.expect_download() as download:
            await page.get_by_test_id("download").click()
        assert (await download.value).suggested_filename.endswith(".tar.gz")
        await page.get_by_test_id("verification").get_by_role("link").click()
        await page.wait_for_load_state()
        assert (await page.get_by_test_id("verify-result").inner_text()).startswith("verified")
        await page.goto(base + "/regulator")
        assert "verified" in await page.get_by_test_id("verification").inner_text()
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        refused = await page.request.post(base + "/operator/rounds", form={"csrf": csrf or ""})
        assert refused.status == 403
        await page.screenshot(path=str(shots / "regulator.png"), full_page=True)
        problems["/regulator"] = await axe_check(page)

        # operator: runs a round from the page and sees its audit
        page = await sign_in(context, await cli_link(base, demo.operator.client.key.to_pem(), tmp_path, "operator"))
        assert page.url == base + "/operator"
        before = await page.get_by_test_id("round-row").count()
        await page.get_by_test_id("run-round").click()
        await page.wait_for_load_state()
        assert await page.get_by_test_id("round-row").count() == before + 1
        assert "Audit" in await page.get_by_test_id("round-audit").inner_text()
        await page.screenshot(path=str(shots / "operator.png"), full_page=True)
        problems["/operator"] = await axe_check(page)

        # the sign-in help page
        page = await context.new_page()
        await page.goto(base + "/login")
        await page.screenshot(path=str(shots / "login.png"), full_page=True)
        problems["/login"] = await axe_check(page)
        await context.close()
        assert all(not v for v in problems.values()), problems
        names = await asyncio.to_thread(lambda: {p.name for p in shots.iterdir()})
        assert names >= {f"{n}.png" for n in ("market", "buyer", "provider", "regulator", "operator")}
    finally:
        await demo.stop()


@pytest.mark.parametrize("backend", ["pg"], indirect=True)
async def test_public_and_buyer_pages_in_chromium_on_postgres(chromium: Any, api: Api, shots: Path) -> None:  # noqa: F811
    api.svc.rounds.disclosure_min_orders = 1  # one order: let the public view show its class price
    await capacity(api)
    buyer = await api.buyer("PG Buyer")
    order = await buyer.submit_order(order_body(), "pg-1")
    await api.svc.rounds.run_round("test")
    link = (await buyer.request("POST", "/console/sessions", {}))["link"]
    context = await chromium.new_context()
    page = await context.new_page()
    await page.goto(api.base_url + "/")
    assert await page.get_by_test_id("price").count() == 1
    assert await page.get_by_test_id("round-row").count() == 1
    page = await sign_in(context, link)
    assert page.url == api.base_url + "/buyer"
    row = page.locator(f'[data-order="{order["id"]}"]')
    assert await row.get_by_test_id("order-status").inner_text() == "filled"
    await page.screenshot(path=str(shots / "buyer-postgres.png"), full_page=True)
    await context.close()


async def test_the_accessibility_check_can_fail(chromium: Any) -> None:
    page = await chromium.new_page()
    await page.set_content('<html><body><img src="x.png"><button></button></body></html>')
    found = {v["id"] for v in await axe_check(page)}
    assert {"image-alt", "button-name"} <= found
    await page.close()
