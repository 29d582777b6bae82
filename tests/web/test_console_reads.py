"""Console read models on SQLite and PostgreSQL: flows, settled totals and heartbeat status agree with the rows."""

from __future__ import annotations

from decimal import Decimal

from exchange.services.console import ConsoleService, heartbeat_status
from tests.exchange.registration_support import Api, api, capacity, order_body  # noqa: F401


def console(api: Api) -> ConsoleService:  # noqa: F811
    svc = api.svc
    return ConsoleService(svc.sessions, svc.catalogue, svc.regions, svc.settings.heartbeat_timeout_seconds)


async def test_flows_sum_contract_values_by_home_and_pool_region(api: Api) -> None:  # noqa: F811
    await capacity(api, region="CN-NM", model="NV-H100-SXM", devices=16, ask_fen=1500)
    buyer = await api.buyer("Flows buyer", home_region="CN-SH")
    await buyer.submit_order(order_body(regions=["CN-NM"], quantity_devices=8, duration_seconds=7200), "f1")
    await api.svc.rounds.run_round("test")
    contracts = (await buyer.request("GET", "/v1/contracts"))["items"]
    assert contracts
    expected_fen = sum(
        Decimal(c["buyer_price_fen"]) * c["devices"] * Decimal(c["end_at"] - c["start_at"]) / 3600 for c in contracts
    )
    hours = sum(Decimal(c["devices"]) * Decimal(c["end_at"] - c["start_at"]) / 3600 for c in contracts)
    flows = await console(api).flows()
    cell = flows["cells"][("CN-SH", "CN-NM")]
    assert cell["fen"] == expected_fen
    assert cell["scu_hours"] == api.svc.catalogue.get("NV-H100-SXM").scu * hours
    assert sum(d["imported"] for d in flows["daily"].values()) == hours  # H100: imported
    assert flows["modes"]["per_minute"]["contracts"] == len(contracts)


async def test_cancelled_contracts_leave_the_flows(api: Api) -> None:  # noqa: F811
    cap = await capacity(api, region="CN-SH")
    buyer = await api.buyer()
    await buyer.submit_order(order_body(), "c1")
    summary = await api.svc.rounds.run_round("test")
    await cap.provider.request("POST", f"/v1/contracts/{summary.contract_ids[0]}/cancel", {"reason": "test"})
    assert (await console(api).flows())["cells"] == {}


def test_heartbeat_status_edges() -> None:
    assert heartbeat_status(None, 1000, 60) == "silent"
    assert heartbeat_status(940, 1000, 60) == "live"
    assert heartbeat_status(939, 1000, 60) == "late"
    assert heartbeat_status(820, 1000, 60) == "late"
    assert heartbeat_status(819, 1000, 60) == "silent"
