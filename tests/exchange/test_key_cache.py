"""The key cache never outlives a participant's status: the operator suspends a participant whose key is cached
and its next signed request is refused (403 participant_suspended), in the process that made the change and, on
PostgreSQL, in another process on the same database (NOTIFY, migration 0950)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from exchange.api.auth import KEY_CACHE, KEY_CACHE_HEARD_SECONDS
from exchange.client import HetexClient, RemoteError
from exchange.composition import build_services
from exchange.settings import Settings
from federation.keys import SigningKey
from tests.exchange.appfactory import serve
from tests.exchange.registration_support import Api, api, capacity

__all__ = ["api"]


async def _operator(api: Api) -> HetexClient:
    c = api.client()
    await api.svc.participants.add_by_operator("operator", "Operator O", c.key.public.to_base64())
    return c


async def _refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(RemoteError) as info:
        await call
    return info.value.status, str(info.value.problem.get("code"))


async def test_a_suspended_key_is_refused_at_once_and_a_reinstated_one_accepted(api: Api) -> None:
    cap = await capacity(api)
    operator = await _operator(api)
    me = await cap.provider.me()
    await cap.provider.heartbeat(cap.site["cri"])  # the provider's key is now in the key cache
    assert api.http.app[KEY_CACHE].get(cap.provider.keyid) is not None
    view = await operator.request("POST", f"/v1/participants/{me['id']}/status", json={"status": "suspended"})
    assert view["status"] == "suspended"
    assert await _refusal(cap.provider.heartbeat(cap.site["cri"])) == (403, "participant_suspended")
    await operator.request("POST", f"/v1/participants/{me['id']}/status", json={"status": "active"})
    assert (await cap.provider.heartbeat(cap.site["cri"]))["cri"] == cap.site["cri"]


async def test_only_the_operator_changes_a_status_and_bad_input_names_the_field(api: Api) -> None:
    cap = await capacity(api)
    operator = await _operator(api)
    me = await cap.provider.me()
    buyer = await api.buyer()
    path = f"/v1/participants/{me['id']}/status"
    assert await _refusal(buyer.request("POST", path, json={"status": "suspended"})) == (403, "role_forbidden")
    assert await _refusal(cap.provider.request("POST", path, json={"status": "suspended"})) == (
        403,
        "role_forbidden",
    )
    with pytest.raises(RemoteError) as bad:
        await operator.request("POST", path, json={"status": "asleep"})
    assert bad.value.status == 422 and "status" in str(bad.value.problem), bad.value.problem
    unknown = "/v1/participants/01890000-0000-7000-8000-000000000000/status"
    assert await _refusal(operator.request("POST", unknown, json={"status": "suspended"})) == (
        404,
        "unknown_participant",
    )
    assert (await cap.provider.me())["status"] == "active"


@pytest.mark.parametrize("backend", ["pg"], indirect=True)
async def test_another_process_refuses_the_suspended_key_at_once(
    fresh_db_factory: Callable[[], str], aiohttp_client: Any, tmp_path: Path
) -> None:
    """Two apps with their own services (own engines, own key caches) on one PostgreSQL, as two `hetex serve`
    processes: the suspension made through one is heard by the other before the provider's next request."""
    url = fresh_db_factory()
    apps = []
    for name in ("a", "b"):
        svc = await build_services(Settings(database_url=url, key_dir=tmp_path / "keys"))
        await svc.identity.init(exist_ok=True)
        http = await serve(aiohttp_client, svc)
        apps.append(Api(svc=svc, base_url=str(http.make_url("")).rstrip("/"), http=http))
    a, b = apps
    try:
        key = SigningKey.generate()
        on_b = b.client(key)
        await on_b.register("provider", "Provider P")
        me = await on_b.me()
        site = await on_b.add_site("CN-SH", "Node 1")
        await on_b.heartbeat(site["cri"])
        cache = b.http.app[KEY_CACHE]
        assert cache.get(on_b.keyid) is not None
        assert cache.ttl == KEY_CACHE_HEARD_SECONDS  # it hears every change, so it keeps keys for longer
        operator = await _operator(a)
        await operator.request("POST", f"/v1/participants/{me['id']}/status", json={"status": "suspended"})
        for _ in range(500):  # the NOTIFY is delivered after the commit, asynchronously: wait for it, bounded
            if cache.get(on_b.keyid) is None:
                break
            await asyncio.sleep(0.01)
        assert await _refusal(on_b.heartbeat(site["cri"])) == (403, "participant_suspended")
        # losing the listening connection: the process stops caching rather than miss a change
        admin = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                "AND datname = current_database()"
            )
        finally:
            await admin.close()
        for _ in range(500):
            if not cache.enabled:
                break
            await asyncio.sleep(0.01)
        assert not cache.enabled and cache.get(on_b.keyid) is None
    finally:
        for x in apps:
            await x.http.close()
            await x.svc.close()
