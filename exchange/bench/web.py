"""`hetex bench web`: server time of each console page on a large SQLite market, next to /healthz measured in
the same run.

The market is seeded through the services (participants, sites, pools, offers, orders; a real clearing round
at the end) plus `rounds` synthetic past rounds with their posted prices (clearing 100 rounds of 10k orders
would take the bench far longer than what it measures). The app runs in this process on a loopback port; each
page is requested `repeat` times one after another (after two warm-ups) with a signed-in session cookie, and
the time from sending to the last byte is recorded.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from exchange.api.keys import SERVICES
from exchange.services.orders import OrderSpec
from exchange.services.principals import Principal, SignedRequest
from exchange.services.registration import OfferPost, PoolDeclaration, SiteRegistration
from exchange.storage.base import now_s
from exchange.storage.rounds import Round, RoundPrice
from exchange.web.keys import COOKIE, PUBLIC_MARKET, WEB_SESSIONS
from federation.keys import SigningKey

SEED_REQUEST = SignedRequest("POST", "bench://seed", b"", "", "", "")
MODELS = ["NV-H100-SXM", "NV-A100-80G-SXM", "HW-910C", "CAM-MLU370-X8", "MT-S4000"]
REGIONS = ["CN-NM", "CN-GZ", "CN-NX", "CN-GS", "CN-SH", "CN-GD", "CN-SC", "CN-CQ"]
PAGES = ["/", "/provider", "/buyer", "/regulator", "/operator"]


@dataclass
class PageTime:
    """Latency of one page over `n` sequential requests."""

    path: str
    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    bytes: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _page_time(path: str, times: list[float], size: int) -> PageTime:
    return PageTime(
        path,
        len(times),
        round(_percentile(times, 0.5), 1),
        round(_percentile(times, 0.95), 1),
        round(max(times), 1),
        size,
    )


async def _principal(svc: Any, role: str, name: str, region: str | None = None) -> Principal:
    key = SigningKey.generate()
    await svc.participants.add_by_operator(role, name, key.public.to_base64(), region)
    found = await svc.participants.principal_by_key_id(_key_id(key))
    assert found is not None
    return found


def _key_id(key: SigningKey) -> str:
    from exchange.services.participants import participant_key_id

    return participant_key_id(key.public)


async def seed(svc: Any, *, orders: int, pools: int, rounds: int, rng: random.Random) -> dict[str, Principal]:
    """A market of `pools` pools (one open offer each), `orders` open orders, `rounds` past rounds."""
    now = now_s()
    providers: list[Principal] = []
    per_provider = 10
    for i in range(max(1, pools // per_provider)):
        p = await _principal(svc, "provider", f"Bench provider {i}", REGIONS[i % len(REGIONS)])
        providers.append(p)
        for s in range(2):
            site = await svc.registration.register_site(
                p, SiteRegistration(region=REGIONS[(i + s) % 4], name=f"site {i}-{s}"), SEED_REQUEST
            )
            await svc.registration.heartbeat(p, site.cri)
            for k in range(per_provider // 2):
                model = MODELS[(i + s + k) % len(MODELS)]
                pool = await svc.registration.declare_pool(
                    p, site.cri, PoolDeclaration(model=model, devices=64, devices_per_node=8), SEED_REQUEST
                )
                await svc.registration.post_offer(
                    p,
                    OfferPost(
                        pool_cri=pool.cri,
                        devices=64,
                        window_start=now - 60,
                        window_end=now + 30 * 86_400,
                        ask_fen=rng.randint(800, 2500),
                    ),
                    SEED_REQUEST,
                )
    buyers = [await _principal(svc, "buyer", f"Bench buyer {i}", REGIONS[4 + i % 4]) for i in range(50)]
    for n in range(orders):
        model = MODELS[n % len(MODELS)]
        spec = OrderSpec.model_validate(
            {
                "quantity_devices": rng.choice([1, 2, 4, 8]),
                "models": [model],
                "duration_seconds": 3600 * rng.randint(1, 8),
                "start_latest": now + 86_400,
                "limit_fen_per_device_hour": {model: rng.randint(500, 2000)},
            }
        )
        await svc.orders.submit(buyers[n % len(buyers)], f"bench-{n}", spec)
    async with svc.sessions.begin() as session:
        for r in range(rounds):
            at = now - (rounds - r) * 300
            rid = str(uuid.uuid4())
            session.add(
                Round(
                    id=rid,
                    started_at=at,
                    finished_at=at + 2,
                    status="completed",
                    trigger="bench",
                    market_now=at,
                    method="bench",
                    orders_count=orders,
                    offers_count=pools,
                    welfare_fen=rng.randint(10**6, 10**8),
                    lp_bound_fen=10**8,
                    gap="0.001",
                    stats={},
                    audit={"ok": True, "checks": []},
                )
            )
            for region in REGIONS[:4]:
                for model in MODELS:
                    price = Decimal(rng.randint(900, 2600))
                    session.add(
                        RoundPrice(
                            round_id=rid,
                            cleared_at=at + 2,
                            region=region,
                            model=model,
                            family=svc.catalogue.get(model).family,
                            gang=1,
                            lease_slots=1,
                            start_at=at,
                            buyer_price=str(price),
                            buyer_price_fen=int(price),
                            min_ask_fen=800,
                            rent="0",
                        )
                    )
    await svc.rounds.run_round("bench")
    regulator = await _principal(svc, "regulator", "Bench regulator")
    operator = await _principal(svc, "operator", "Bench operator")
    return {"provider": providers[0], "buyer": buyers[0], "regulator": regulator, "operator": operator}


async def _time(
    http: aiohttp.ClientSession, url: str, cookie: str | None, repeat: int, before: Callable[[], None] | None = None
) -> tuple[list[float], int]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    times, size = [], 0
    for i in range(repeat + 2):
        if before is not None:
            before()
        t = time.perf_counter()
        async with http.get(url, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{url} answered {resp.status}: {body[:200]!r}")
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
        size = len(body)
    return times, size


async def run_bench(*, orders: int, pools: int, rounds: int, repeat: int, seed_value: int = 7) -> dict[str, Any]:
    """Seed, serve, time every page and /healthz; the result as a dict."""
    from exchange.bench.quiet import quiet_settings
    from exchange.cli.serve import prepare

    with tempfile.TemporaryDirectory(prefix="hetex-bench-web-") as tmp:
        # no peers: keep checkpoints and the federation loops from competing for the loop
        settings = quiet_settings(
            f"sqlite+aiosqlite:///{Path(tmp) / 'hetex.db'}", Path(tmp) / "keys", exports_dir=Path(tmp) / "exports"
        )
        app = await prepare(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        try:
            svc = app[SERVICES]
            t0 = time.perf_counter()
            parties = await seed(svc, orders=orders, pools=pools, rounds=rounds, rng=random.Random(seed_value))
            seeded = time.perf_counter() - t0
            cookies: dict[str, str] = {}
            for role, who in parties.items():
                started = await app[WEB_SESSIONS].start(who)
                token, _ = await app[WEB_SESSIONS].redeem(started.code, "bench")
                cookies[role] = token
            results = []
            async with aiohttp.ClientSession() as http:
                health, _ = await _time(http, base + "/healthz", None, repeat)
                for path in PAGES:
                    times, size = await _time(http, base + path, cookies.get(path.strip("/")), repeat)
                    results.append(_page_time(path, times, size))
                # the public page is shared for PUBLIC_MARKET_SECONDS: also time it computed afresh every time
                cold, size = await _time(http, base + "/", None, max(3, repeat // 4), app[PUBLIC_MARKET].clear)
                results.append(_page_time("/ (uncached)", cold, size))
        finally:
            await runner.cleanup()
    base_p95 = _percentile(health, 0.95)
    return {
        "market": {"orders": orders, "pools": pools, "rounds": rounds, "seed_seconds": round(seeded, 1)},
        "repeat": repeat,
        "baseline": {"path": "/healthz", "p50_ms": round(_percentile(health, 0.5), 2), "p95_ms": round(base_p95, 2)},
        "pages": [
            {**asdict(r), "p95_vs_healthz": round(r.p95_ms / base_p95, 1) if base_p95 else None} for r in results
        ],
    }


def format_result(result: dict[str, Any]) -> str:
    """Human table of the result."""
    m = result["market"]
    lines = [
        f"console pages on SQLite: {m['orders']} open orders, {m['pools']} pools, {m['rounds']} past rounds "
        f"(seeded in {m['seed_seconds']} s); {result['repeat']} sequential requests per page",
        f"baseline /healthz: p50 {result['baseline']['p50_ms']} ms, p95 {result['baseline']['p95_ms']} ms",
        f"{'page':<14}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'KiB':>8}{'p95/healthz':>13}",
    ]
    for p in result["pages"]:
        lines.append(
            f"{p['path']:<14}{p['p50_ms']:>10}{p['p95_ms']:>10}{p['max_ms']:>10}{p['bytes'] // 1024:>8}"
            f"{p['p95_vs_healthz']:>13}"
        )
    return "\n".join(lines)
