"""Issue 11 bug 3: an order that can never be contracted is refused at submission, and a round never hands
capacity to an order its commit would refuse (so no buyer can starve the market with such an order)."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from exchange.billing.compute_tier import TierTable
from exchange.billing.contractable import TermsCheck, contract_terms
from exchange.billing.errors import BillingError
from exchange.billing.tiers import load_tier_table
from exchange.client import HetexClient, RemoteValidationError
from exchange.services.snapshot import OrderRow, market_order
from exchange.storage.orders import Order
from identifiers.catalogue import load_catalogue
from tests.exchange.registration_support import Api, make_api, order_body

ALL_MODES = ["per_minute", "compute_tier", "subscription", "project"]
CAT = load_catalogue()
_key = itertools.count()


@pytest.fixture
async def api(db: Any, aiohttp_client: Any, tmp_path: Path) -> Api:
    """The app on the per-test rolled-back database."""
    return await make_api(db, aiohttp_client, tmp_path)


async def offer(api: Api, model: str, devices: int = 8, ask_fen: int = 1000) -> dict[str, Any]:
    """A provider offering `devices` of `model` in CN-SH under every billing mode."""
    p = await api.provider()
    site = await p.add_site("CN-SH", "Node 1", pue="1.25", green_share="0.4", interconnect="RoCE 400G")
    pool = await p.add_pool(site["cri"], model, devices, nodes=1, devices_per_node=devices)
    result: dict[str, Any] = await p.post_offer(
        pool["cri"], devices, ask_fen, int(time.time()) - 60, billing_modes=ALL_MODES
    )
    return result


async def operator(api: Api) -> HetexClient:
    c = api.client()
    await api.svc.participants.add_by_operator("operator", "Exchange operator", c.key.public.to_base64())
    return c


async def submit(buyer: HetexClient, **overrides: Any) -> dict[str, Any]:
    return await buyer.submit_order(order_body(**overrides), f"k-{next(_key)}")


def without_tier(code: str) -> TierTable:
    """The packaged tier table with one tier removed (an operator edited specs/billing-tiers.yaml)."""
    table = load_tier_table()
    return replace(table, prices={k: v for k, v in table.prices.items() if k != code})


async def filled(buyer: HetexClient, order_id: str) -> int:
    return int((await buyer.request("GET", f"/v1/orders/{order_id}"))["filled_devices"])


# ------------------------------------------------------------------------------- the scenario


async def test_bogus_tier_with_the_highest_bid_is_refused_and_cannot_starve_an_honest_order(api: Api) -> None:
    await offer(api, "NV-H100-SXM", devices=8)
    honest_buyer = await api.buyer("Honest")
    greedy = await api.buyer("Greedy")
    honest = await submit(honest_buyer, limit_fen_per_device_hour={"NV-H100-SXM": 3000})
    before = await api.counts()
    with pytest.raises(RemoteValidationError) as err:
        await submit(
            greedy,
            limit_fen_per_device_hour={"NV-H100-SXM": 90_000},
            billing_mode="compute_tier",
            billing_terms={"tier_table": "no-such-tier"},
        )
    assert err.value.status == 422 and err.value.field == "billing_terms.tier_table", err.value.problem
    assert err.value.problem["code"] == "invalid_billing"
    assert await api.counts() == {**before, "seen_nonces": before["seen_nonces"]}  # nothing stored
    # the same greedy order with a tier that exists now but is gone by the round (the table was edited)
    greedy_order = await submit(
        greedy,
        limit_fen_per_device_hour={"NV-H100-SXM": 90_000},
        billing_mode="compute_tier",
        billing_terms={"tier_table": "premium"},
    )
    api.svc.rounds.tiers = api.svc.contracts.tiers = lambda: without_tier("premium")
    op = await operator(api)
    for _ in range(3):
        rnd = await op.request("POST", "/v1/rounds")
        assert rnd["dropped_allocations"] == 0, rnd
    assert await filled(honest_buyer, honest["id"]) == 8
    assert await filled(greedy, greedy_order["id"]) == 0


# ------------------------------------------------------------------------- every commit-time refusal


async def test_compute_tier_order_with_no_model_priced_in_scu_is_refused(api: Api) -> None:
    b = await api.buyer()
    no_scu = [m.code for m in CAT.models if m.scu is None][:2]
    with pytest.raises(RemoteValidationError) as err:
        await submit(
            b,
            models=no_scu,
            limit_fen_per_device_hour={"*": 5000},
            billing_mode="compute_tier",
            billing_terms={"tier_table": "standard"},
        )
    assert err.value.status == 422 and err.value.field == "models", err.value.problem
    assert (await api.counts())["orders"] == 0


async def test_project_milestone_under_a_second_is_refused(api: Api) -> None:
    b = await api.buyer()
    terms = {
        "fixed_price_fen": 1_000_000,
        "milestones": [{"name": "kick-off", "share_bps": 2}, {"name": "done", "share_bps": 9998}],
    }
    with pytest.raises(RemoteValidationError) as err:
        await submit(b, duration_seconds=3600, billing_mode="project", billing_terms=terms)
    assert err.value.status == 422 and err.value.field == "billing_terms.milestones.0.share_bps", err.value.problem
    ok = await submit(b, duration_seconds=5000, billing_mode="project", billing_terms=terms)  # 5000 x 2 = 10000
    assert ok["status"] == "open"


async def test_compute_tier_order_only_sees_models_it_can_be_billed_on(api: Api) -> None:
    """A compute-tier order accepting a model without an SCU figure must not win that model's capacity."""
    no_scu = next(m.code for m in CAT.models if m.scu is None)
    await offer(api, no_scu, devices=8)
    honest_buyer, greedy = await api.buyer("Honest"), await api.buyer("Greedy")
    honest = await submit(honest_buyer, models=[no_scu], limit_fen_per_device_hour={no_scu: 3000})
    greedy_order = await submit(
        greedy,
        models=[no_scu, "NV-H100-SXM"],
        limit_fen_per_device_hour={"*": 90_000},
        billing_mode="compute_tier",
        billing_terms={"tier_table": "standard"},
    )
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["dropped_allocations"] == 0 and rnd["matched_devices"] == 8, rnd
    assert await filled(honest_buyer, honest["id"]) == 8
    assert await filled(greedy, greedy_order["id"]) == 0


async def test_stored_terms_the_commit_would_refuse_sit_the_round_out(api: Api) -> None:
    """An order stored before today's checks (terms edited in the database) never takes capacity."""
    await offer(api, "NV-H100-SXM", devices=8)
    honest_buyer, greedy = await api.buyer("Honest"), await api.buyer("Greedy")
    honest = await submit(honest_buyer)
    greedy_order = await submit(
        greedy,
        limit_fen_per_device_hour={"NV-H100-SXM": 90_000},
        billing_mode="project",
        billing_terms={"fixed_price_fen": 1000},
    )
    bad = {"fixed_price_fen": 1000, "milestones": [{"name": "a", "share_bps": 1}, {"name": "b", "share_bps": 9999}]}
    async with api.svc.sessions.begin() as session:
        row = await session.get(Order, greedy_order["id"])
        assert row is not None
        await session.execute(update(Order).where(Order.id == row.id).values(spec={**row.spec, "billing_terms": bad}))
    rnd = await (await operator(api)).request("POST", "/v1/rounds")
    assert rnd["dropped_allocations"] == 0 and rnd["matched_devices"] == 8, rnd
    assert await filled(honest_buyer, honest["id"]) == 8
    assert await filled(greedy, greedy_order["id"]) == 0


SPEC: dict[str, Any] = {
    "quantity_devices": 4,
    "models": ["NV-H100-SXM"],
    "duration_seconds": 3600,
    "limit_fen_per_device_hour": {"NV-H100-SXM": 3000},
}
#: Every way `contract_terms` (what the commit runs per allocation) refuses an order's terms:
#: (name, billing mode, the order's stored billing terms, the model the round would give it).
COMMIT_REFUSALS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("unknown tier", "compute_tier", {"tier_table": "gone"}, "NV-H100-SXM"),
    ("model without SCU", "compute_tier", {"tier_table": "standard"}, "HW-910B3"),
    (
        "milestone under a second",
        "project",
        {"fixed_price_fen": 10, "milestones": [{"name": "a", "share_bps": 1}, {"name": "b", "share_bps": 9999}]},
        "NV-H100-SXM",
    ),
    ("bad subscription period", "subscription", {"period": "weekly"}, "NV-H100-SXM"),
    ("project without a price", "project", {"milestones": [{"name": "a", "share_bps": 10000}]}, "NV-H100-SXM"),
    ("tier name not text", "compute_tier", {"tier": 7}, "NV-H100-SXM"),
]


@pytest.mark.parametrize(("name", "mode", "terms", "model"), COMMIT_REFUSALS, ids=[c[0] for c in COMMIT_REFUSALS])
def test_each_commit_refusal_is_filtered_from_the_snapshot(
    name: str, mode: str, terms: dict[str, Any] | None, model: str
) -> None:
    tiers = without_tier("gone")
    span = 3600
    with pytest.raises(BillingError):  # the commit would refuse it ...
        contract_terms(
            mode, terms, start_at=0, end_at=span, buyer_price_fen=1, model_scu=CAT.get(model).scu, tiers=tiers
        )
    spec = {**SPEC, "models": [model], "limit_fen_per_device_hour": {model: 3000}, "billing_mode": mode}
    if terms is not None:
        spec["billing_terms"] = terms
    row = OrderRow("o1", "b1", "open", spec, 4, 0, 0, 0, "CN-SH")
    made = market_order(row, 0, CAT, slot_seconds=300, terms_check=TermsCheck(tiers))
    assert isinstance(made, str), (
        f"{name}: the matcher would see an order its commit refuses"
    )  # ... so no round sees it


def test_a_contractable_order_still_takes_part() -> None:
    for mode, terms in [
        ("per_minute", None),
        ("compute_tier", {"tier_table": "standard"}),
        ("subscription", {"period": "yearly"}),
        (
            "project",
            {"fixed_price_fen": 10, "milestones": [{"name": "a", "share_bps": 3}, {"name": "b", "share_bps": 9997}]},
        ),
    ]:
        spec = {**SPEC, "billing_mode": mode, **({"billing_terms": terms} if terms else {})}
        made = market_order(OrderRow("o1", "b1", "open", spec, 4, 0, 0, 0, "CN-SH"), 0, CAT, slot_seconds=300)
        assert not isinstance(made, str), (mode, made)
        contract_terms(
            mode, terms, start_at=0, end_at=3600, buyer_price_fen=1, model_scu=Decimal("3.17"), tiers=load_tier_table()
        )
