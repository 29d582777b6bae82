"""Reference endpoints: health, catalogue, regions, resolve, metrics, and problem+json for bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.exchange.appfactory import make_client


async def test_healthz_catalogue_regions(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    client = await make_client(aiohttp_client, db, tmp_path)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"

    resp = await client.get("/v1/catalogue/accelerators")
    assert resp.status == 200
    body = await resp.json()
    assert body["count"] >= 25
    assert len(body["vendors"]) >= 10
    assert all(m.get("sources") for m in body["models"])

    resp = await client.get("/v1/regions")
    body = await resp.json()
    codes = [r["code"] for r in body["regions"]]
    assert {"CN-NM", "CN-GZ", "CN-GS", "CN-NX"} <= set(codes)
    assert body["latency_ms"][codes[0]][codes[1]] == body["latency_ms"][codes[1]][codes[0]]


async def test_resolve_errors_are_problem_json(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    client = await make_client(aiohttp_client, db, tmp_path)
    resp = await client.get("/v1/resolve/not-a-cri")
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["code"] == "invalid_cri"
    assert body["field"]

    from identifiers.cri import mint_site_cri

    unknown = str(mint_site_cri("HX", "CN-SH", "AB12"))
    resp = await client.get(f"/v1/resolve/{unknown}")
    assert resp.status == 404
    assert (await resp.json())["code"] == "unknown_cri"

    resp = await client.get("/v1/no-such-route")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    resp = await client.delete("/healthz")
    assert resp.status == 405
    assert resp.content_type == "application/problem+json"


async def test_metrics_count_requests(aiohttp_client: Any, db: Any, tmp_path: Path) -> None:
    client = await make_client(aiohttp_client, db, tmp_path)
    await client.get("/healthz")
    text = await (await client.get("/metrics")).text()
    assert 'hetex_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
