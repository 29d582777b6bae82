"""Provider node registration through the HTTP API: sites, pools, offers, heartbeats, tombstones,
signed records, and the live-offer snapshot for clearing."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from exchange.client import (
    HetexClient,
    RemoteConflictError,
    RemoteGoneError,
    RemoteNotFoundError,
    RemoteValidationError,
)
from exchange.storage.participants import RegistrationRecord
from exchange.storage.registration import Site
from identifiers.cri import parse_cri
from tests.exchange.registration_support import Api, api, capacity

__all__ = ["api"]


async def test_full_registration_flow(api: Api) -> None:
    p = await api.provider()
    me = await p.me()
    site = await p.add_site("CN-GZ", "Gui'an 1", pue="1.18", green_share="0.65", interconnect="RoCE")
    cri = parse_cri(site["cri"])
    assert (cri.kind, cri.authority, cri.region, cri.operator) == ("site", "HX", "CN-GZ", me["operator_code"])
    assert site["pue"] == "1.180" or site["pue"] == "1.18"
    pool = await p.add_pool(site["cri"], "HW-910B3", 64, nodes=8, devices_per_node=8, intra_node_link="HCCS")
    pcri = parse_cri(pool["cri"])
    assert pcri.site_cri == cri and pcri.model == "HW-910B3" and pool["memory_gb"] == 64
    assert (await p.request("GET", f"/v1/pools/{pool['cri']}", signed=False))["cri"] == pool["cri"]
    detail = await p.request("GET", f"/v1/sites/{site['cri']}", signed=False)
    assert [x["cri"] for x in detail["pools"]] == [pool["cri"]]
    resolved = await p.request("GET", f"/v1/resolve/{pool['cri']}", signed=False)
    assert resolved["kind"] == "pool"

    now = int(time.time())
    offer = await p.post_offer(pool["cri"], 32, 1500, now, window_end=now + 86400, billing_modes=["per_minute"])
    assert offer["version"] == 1 and offer["status"] == "open" and offer["model"] == "HW-910B3"
    amended = await p.request("PATCH", f"/v1/offers/{offer['id']}", {"ask_fen": 1400, "expected_version": 1})
    assert (amended["ask_fen"], amended["version"]) == (1400, 2)
    with pytest.raises(RemoteConflictError) as err:
        await p.request("PATCH", f"/v1/offers/{offer['id']}", {"ask_fen": 1300, "expected_version": 1})
    assert err.value.remote_code == "offer_version_mismatch"
    with pytest.raises(RemoteConflictError) as err:
        await p.post_offer(pool["cri"], 40, 1500, now)
    assert err.value.remote_code == "pool_overcommitted"
    listed = await p.request("GET", "/v1/offers")
    assert [o["id"] for o in listed["offers"]] == [offer["id"]]
    hb = await p.heartbeat(site["cri"])
    assert hb["live_until"] == hb["last_heartbeat_at"] + api.svc.settings.heartbeat_timeout_seconds

    async with api.svc.sessions() as session:
        live = await api.svc.registration.live_offers(session, int(time.time()))
    assert [(lo.offer_id, lo.model, lo.region, lo.devices, lo.ask_fen, lo.nodes) for lo in live] == [
        (offer["id"], "HW-910B3", "CN-GZ", 32, 1400, 8)
    ]
    assert live[0].family and live[0].site_cri == site["cri"]

    withdrawn = await p.request("DELETE", f"/v1/offers/{offer['id']}")
    assert withdrawn["status"] == "withdrawn"
    with pytest.raises(RemoteConflictError):
        await p.request("DELETE", f"/v1/offers/{offer['id']}")
    offer2 = await p.post_offer(pool["cri"], 8, 1500, now)
    gone = await p.request("DELETE", f"/v1/sites/{site['cri']}")
    assert gone["status"] == "tombstoned" and gone["tombstoned_at"]
    tomb = await p.request("GET", f"/v1/pools/{pool['cri']}", signed=False)
    assert tomb["status"] == "tombstoned"
    await expect_withdrawn(p, offer2["id"])
    with pytest.raises(RemoteConflictError) as err:
        await p.heartbeat(site["cri"])
    assert err.value.remote_code == "tombstoned"
    with pytest.raises(RemoteConflictError):
        await p.add_pool(site["cri"], "HW-910B3", 8)

    async with api.svc.sessions() as session:
        actions = [
            r.action
            for r in (
                await session.execute(select(RegistrationRecord).order_by(RegistrationRecord.created_at))
            ).scalars()
        ]
    for action in (
        "participant.register",
        "site.register",
        "pool.declare",
        "offer.post",
        "offer.amend",
        "offer.withdraw",
        "site.deregister",
    ):
        assert action in actions


async def test_silent_site_drops_out_of_live_offers(api: Api) -> None:
    cap = await capacity(api)
    now = int(time.time())
    async with api.svc.sessions() as session:
        assert len(await api.svc.registration.live_offers(session, now)) == 1
        timeout = api.svc.settings.heartbeat_timeout_seconds
        assert await api.svc.registration.live_offers(session, now + timeout + 61) == []
    async with api.svc.sessions.begin() as session:
        await session.execute(update(Site).values(last_heartbeat_at=now - 10_000))
    async with api.svc.sessions() as session:
        assert await api.svc.registration.live_offers(session, now) == []
    await cap.provider.heartbeat(cap.site["cri"])
    async with api.svc.sessions() as session:
        assert len(await api.svc.registration.live_offers(session, int(time.time()))) == 1


async def expect_withdrawn(provider: HetexClient, offer_id: str) -> None:
    """A withdrawn offer is 410 offer_withdrawn (schemathesis: no use after DELETE), still listed with its status."""
    with pytest.raises(RemoteGoneError) as err:
        await provider.request("GET", f"/v1/offers/{offer_id}")
    assert err.value.status == 410 and err.value.problem["code"] == "offer_withdrawn"
    assert err.value.problem["withdrawn_at"] > 0
    listed = await provider.request("GET", "/v1/offers?status=withdrawn")
    assert offer_id in {o["id"] for o in listed["offers"]}


async def test_pool_tombstone_withdraws_its_offers(api: Api) -> None:
    cap = await capacity(api)
    await cap.provider.request("DELETE", f"/v1/pools/{cap.pool['cri']}")
    await expect_withdrawn(cap.provider, cap.offer["id"])
    with pytest.raises(RemoteConflictError):
        await cap.provider.post_offer(cap.pool["cri"], 1, 10, 0)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/sites", {"region": "CN-XX", "name": "n"}, "region"),
        ("/v1/sites", {"region": "CN-SH", "name": "n", "pue": "0.5"}, "pue"),
        ("/v1/sites", {"region": "CN-SH", "name": "n", "green_share": 2}, "green_share"),
        ("/v1/sites", {"region": "CN-SH"}, "name"),
        ("POOL", {"model": "NV-NOPE", "devices": 8}, "model"),
        ("POOL", {"model": "NV-H100-SXM", "devices": 8, "nodes": 3}, "body"),
        ("POOL", {"model": "NV-H100-SXM", "devices": 8, "nodes": 2, "devices_per_node": 8}, "body"),
        ("POOL", {"model": "NV-H100-SXM", "devices": 0}, "devices"),
        ("/v1/offers", {"pool_cri": "CRI1:bad", "devices": 1, "ask_fen": 1, "window_start": 0}, "pool_cri"),
        ("OFFER", {"devices": 999, "ask_fen": 1, "window_start": 0}, "devices"),
        ("OFFER", {"devices": 1, "ask_fen": 0, "window_start": 0}, "ask_fen"),
        ("OFFER", {"devices": 1, "ask_fen": 1.5, "window_start": 0}, "ask_fen"),
        ("OFFER", {"devices": 1, "ask_fen": 1, "window_start": 10, "window_end": 5}, "body"),
        ("OFFER", {"devices": 1, "ask_fen": 1, "window_start": 0, "billing_modes": ["barter"]}, "billing_modes.0"),
        ("OFFER", {"devices": 1, "ask_fen": 1, "window_start": 0, "billing_modes": []}, "billing_modes"),
    ],
)
async def test_bad_registration_input_names_the_field(api: Api, path: str, body: dict[str, object], field: str) -> None:
    cap = await capacity(api, devices=16)
    if path == "POOL":
        path = f"/v1/sites/{cap.site['cri']}/pools"
    if path == "OFFER":
        path, body = "/v1/offers", {"pool_cri": cap.pool["cri"], **body}
    before = await api.counts()
    with pytest.raises(RemoteValidationError) as err:
        await cap.provider.request("POST", path, body)
    assert err.value.status == 422 and err.value.field == field, err.value.problem
    after = await api.counts()
    assert {k: v for k, v in after.items() if k != "seen_nonces"} == {
        k: v for k, v in before.items() if k != "seen_nonces"
    }


async def test_unknown_and_malformed_identifiers(api: Api) -> None:
    p = await api.provider()
    site = await p.add_site("CN-SH", "n")
    good = str(parse_cri(site["cri"]))
    wrong = good[:-1] + ("X" if good[-1] != "X" else "Y")
    with pytest.raises(RemoteValidationError) as err:
        await p.request("GET", f"/v1/sites/{wrong}", signed=False)
    assert err.value.remote_code == "invalid_cri"
    with pytest.raises(RemoteNotFoundError):
        await p.request("GET", "/v1/offers/01890a5d-ac96-774b-bcce-b302099a8057")
    with pytest.raises(RemoteValidationError) as err:
        await p.request("GET", "/v1/offers/not-an-id")
    assert err.value.field == "id"
    with pytest.raises(RemoteValidationError):
        await p.request("PATCH", "/v1/offers/01890a5d-ac96-774b-bcce-b302099a8057", {})
