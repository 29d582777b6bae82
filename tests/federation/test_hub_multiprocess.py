"""One hub and three member exchanges as real `hetex serve` processes (H, A, B, C on 127.0.0.11-14, each
its own SQLite database, keys and authority): members push signed supply summaries and unmet demand to H,
H clears them and routes holds; A's order is filled by B and C through the hub with the ordinary two-phase
protocol; A's SCU order is filled by B and C exactly (the hub converts it to devices of one model, A tracks
the fill in SCU); B killed after holding for A: its hold expires, nothing is sold twice, and A, B converge after B
restarts (the order is routed again and filled); C wrongly flagged by A (a consistency proof corrupted in
transit, HETEX_TEST_CORRUPT_PROOF): A skips the hub's routes to C until the operator's reverify restores it,
then C fills the order; C loses its database and comes back with the same key and a different, longer log:
H, A and B flag it, reverify keeps it flagged, and the evidence (two of C's signed checkpoints) verifies
offline with C's key. The tests share one fabric and run in order (the last leaves C flagged)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from exchange.client import HetexClient
from exchange.composition import build_services
from exchange.settings import Settings
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.identity import ExchangeKey
from exchange.storage.migrate import upgrade_engine
from federation.keys import parse_verifier_key, save_signing_key
from federation.note import NoteVerifier, verify_checkpoint
from tests.federation import fedkit
from tests.federation.procs import Proc, get_json, make_procs, start_and_peer, wait_for
from tests.federation.test_federation_security import remove_database

pytestmark = pytest.mark.slow

H100, H20, MI300X = "NV-H100-SXM", "NV-H20", "AMD-MI300X"  # MI300X: 4.1891 SCU per device
L20, L40S = "NV-L20", "NV-L40S"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Proc]]:
    """H (hub mode) and members A, B, C naming H as their hub, all peered (module scope, tests in order)."""
    procs = make_procs(tmp_path_factory.mktemp("hub"), ["H", "A", "B", "C"])
    procs[0].extra_env.update(
        {"HETEX_FEDERATION_HUB_MODE": "true", "HETEX_FEDERATION_HUB_ROUND_INTERVAL_SECONDS": "0.5"}
    )
    for p in procs[1:]:
        p.extra_env["HETEX_FEDERATION_HUB"] = "H"
    try:
        start_and_peer(procs)
        yield {p.authority: p for p in procs}
    finally:
        for p in procs:
            p.stop()


def hub_members(h: Proc) -> list[str]:
    return list(h.get("/v1/federation/hub")["members"])


def published_twice(*members: Proc) -> None:
    """Until each member has sent the hub two more summaries: the second was built after this call, so the
    hub's curves show what was seeded before it (else an order can reach the hub before a new pool does)."""

    def published(p: Proc) -> int:
        return int(p.get("/v1/federation/hub")["counts"].get("published", 0))

    start = {p.authority: published(p) for p in members}
    wait_for(lambda: all(published(p) >= start[p.authority] + 2 for p in members), 30, "members published", 0.2)


def test_order_at_a_filled_by_b_and_c_through_the_hub(
    fabric: dict[str, Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    h, a, b, c = fabric["H"], fabric["A"], fabric["B"], fabric["C"]
    with fedkit.db_session(b.db_url) as s:
        pool_b = fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
    with fedkit.db_session(c.db_url) as s:
        pool_c = fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=8, ask_fen=1500)
    wait_for(lambda: hub_members(h) == ["A", "B", "C"], 30, "H has fresh supply summaries of A, B and C")
    with fedkit.db_session(a.db_url) as s:
        buyer = fedkit.seed_buyer(s)
        order = fedkit.seed_order(s, buyer, devices=12, models=[H100], limit_fen=3000)
    t0 = time.perf_counter()
    wait_for(lambda: fedkit.order_row(a.db_url, order)["status"] == "filled", 45, "order filled through the hub", 0.02)
    e2e_ms = (time.perf_counter() - t0) * 1000

    at_a = a.get(f"/v1/federation/contracts?order_id={order}")["contracts"]
    # the hub cleared on both owners' curves: C's cheaper 8 devices, then 4 of B's
    assert sorted((x["peer"], x["devices"]) for x in at_a) == [("B", 4), ("C", 8)]
    assert sum(x.devices for x in fedkit.contracts_on_pool(b.db_url, pool_b.pool_id)) == 4
    assert sum(x.devices for x in fedkit.contracts_on_pool(c.db_url, pool_c.pool_id)) == 8
    view_a = a.get("/v1/federation/hub")
    assert view_a["hub"] == "H" and view_a["counts"].get("routed_committed", 0) >= 1
    hub = h.get("/v1/federation/hub")
    assert hub["hub_mode"] is True and hub["rounds"] >= 1
    assert hub["counts"].get("received_hub_demand", 0) >= 1 and hub["counts"].get("received_supply_summary", 0) >= 3
    # only the routed owners were asked (no greedy forwarding) and each committed once; under load a hold
    # refused on a stale summary is asked again in a later hub round, hence up to two extra offers
    sent = a.get("/v1/federation/stats")["messages_sent"]
    assert 2 <= sent.get("order_offer", 0) <= 4 and sent.get("hold_commit", 0) == 2
    with capsys.disabled():
        print(
            f"\nhub path, 1 order of 12 devices split over 2 owners: order written -> filled {e2e_ms:.0f} ms "
            f"(publish 1 s, hub round 0.5 s); routes -> contracts {view_a['route_to_contract_ms_p50']:.0f} ms; "
            f"hub round solve {hub['last_round'].get('solve_ms')} ms"
        )


def test_scu_order_at_a_filled_by_b_and_c_exactly_through_the_hub(fabric: dict[str, Proc]) -> None:
    h, a, b, c = fabric["H"], fabric["A"], fabric["B"], fabric["C"]
    with fedkit.db_session(b.db_url) as s:  # 2 cheap devices: 8.3782 SCU, short of 12
        pool_b = fedkit.seed_pool(s, "B", region="CN-NM", model=MI300X, devices=2, ask_fen=2000)
    with fedkit.db_session(c.db_url) as s:
        pool_c = fedkit.seed_pool(s, "C", region="CN-GZ", model=MI300X, devices=8, ask_fen=2600)
    published_twice(b, c)
    rounds = h.get("/v1/federation/hub")["rounds"]
    with fedkit.db_session(a.db_url) as s:
        order = fedkit.seed_scu_order(s, fedkit.seed_buyer(s), scu="12", models=[MI300X], limit_fen_per_scu_hour=1000)
    wait_for(lambda: fedkit.scu_fill(a.db_url, order)[0] == "filled", 45, "SCU order filled through the hub", 0.05)

    _status, filled_scu, devices = fedkit.scu_fill(a.db_url, order)
    # ceil(12 / 4.1891) = 3 devices: B's 2 cheaper ones and 1 of C's; a device fewer would not reach 12 SCU
    assert devices == 3 and Decimal(filled_scu or "0") == 3 * Decimal("4.1891")
    at_a = a.get(f"/v1/federation/contracts?order_id={order}")["contracts"]
    assert sorted((x["peer"], x["model"], x["devices"]) for x in at_a) == [("B", MI300X, 2), ("C", MI300X, 1)]
    assert sum(x.devices for x in fedkit.contracts_on_pool(b.db_url, pool_b.pool_id)) == 2
    assert sum(x.devices for x in fedkit.contracts_on_pool(c.db_url, pool_c.pool_id)) == 1
    assert h.get("/v1/federation/hub")["rounds"] > rounds  # placed by a hub round, not by greedy forwarding


def test_member_killed_after_hold_expires_nothing_sold_twice_converges(fabric: dict[str, Proc]) -> None:
    a, b = fabric["A"], fabric["B"]
    a.stop()  # restart A with a wider hold-to-commit gap, so B can be killed between hold and commit
    a.extra_env["HETEX_FEDERATION_COMMIT_DELAY_SECONDS"] = "2"
    a.start()
    a.wait_ready()
    with fedkit.db_session(b.db_url) as s:
        pool = fedkit.seed_pool(s, "B", region="CN-NM", model=H20, devices=8, ask_fen=1000)
    with fedkit.db_session(a.db_url) as s:
        buyer = fedkit.seed_buyer(s)
        order = fedkit.seed_order(s, buyer, devices=8, models=[H20], limit_fen=3000)
    held = wait_for(lambda: b.get("/v1/federation/holds?status=held")["holds"], 45, "B holds for A", 0.02)
    b.kill()  # mid-protocol: A holds 8 devices at B and has not committed
    assert fedkit.order_row(a.db_url, order)["status"] == "open"
    time.sleep(3.5)  # past the hold's expiry (HETEX_FEDERATION_HOLD_TTL_SECONDS=3)
    b.start()
    b.wait_ready()
    wait_for(lambda: fedkit.order_row(a.db_url, order)["status"] == "filled", 60, "order routed again and filled")

    holds = {x["hold_id"]: x for x in b.get("/v1/federation/holds")["holds"]}
    assert holds[held[0]["hold_id"]]["status"] == "expired"
    assert sum(x.devices for x in fedkit.contracts_on_pool(b.db_url, pool.pool_id)) == 8  # never sold twice

    def converged() -> bool:
        ab = {x["contract_id"] for x in a.get("/v1/federation/contracts?peer=B")["contracts"]}
        ba = {x["contract_id"] for x in b.get("/v1/federation/contracts?peer=A")["contracts"]}
        pa = {p["authority"]: p for p in a.get("/v1/federation/peers")["peers"]}
        return ab == ba and len(ab) >= 2 and pa["B"]["log_status"] == "consistent"

    wait_for(converged, 30, "A and B agree on their contracts", 0.3)


def log_status(p: Proc, peer: str) -> str:
    """`peer`'s log status as `p` sees it."""
    return str({x["authority"]: x for x in p.get("/v1/federation/peers")["peers"]}[peer]["log_status"])


def reverify(p: Proc, peer: str) -> dict[str, Any]:
    """`POST /v1/peers/{peer}/reverify` at `p`, signed by its operator."""

    async def go() -> dict[str, Any]:
        async with HetexClient(p.url, p.operator_key) as operator:
            return dict(await operator.request("POST", f"/v1/peers/{peer}/reverify"))

    return asyncio.run(go())


def open_evidence(p: Proc, peer: str) -> list[dict[str, Any]]:
    """The evidence behind `p`'s open flags of `peer`."""
    return [e for e in p.get(f"/v1/federation/evidence?peer={peer}")["evidence"] if e["resolution"] is None]


def test_wrongly_flagged_member_is_skipped_then_restored_and_routed_to_again(fabric: dict[str, Proc]) -> None:
    h, a, b, c = fabric["H"], fabric["A"], fabric["B"], fabric["C"]
    a.stop()  # restart A so that the first consistency proof it fetches from C arrives corrupted
    a.extra_env.pop("HETEX_FEDERATION_COMMIT_DELAY_SECONDS", None)
    a.extra_env["HETEX_TEST_CORRUPT_PROOF"] = "C"
    a.start()
    a.wait_ready()
    with fedkit.db_session(c.db_url) as s:  # C's log grows: its own round fills a local order on a local pool
        fedkit.seed_pool(s, "C", region="CN-GZ", model=L20, devices=2, ask_fen=1000)
        fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[L20], limit_fen=3000)
    wait_for(lambda: log_status(a, "C") == "inconsistent", 30, "A flags C on the corrupted proof", 0.2)
    assert log_status(h, "C") == "consistent" and log_status(b, "C") == "consistent"  # C's log is fine
    (ev,) = open_evidence(a, "C")
    assert "not consistent with" in ev["problem"] and 0 < ev["kept"]["size"] < ev["seen"]["size"]

    # while flagged, A skips the hub's routes to C: the order stays open and C holds nothing for it
    with fedkit.db_session(c.db_url) as s:
        pool = fedkit.seed_pool(s, "C", region="CN-GZ", model=L40S, devices=4, ask_fen=1200)
    with fedkit.db_session(a.db_url) as s:
        order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=4, models=[L40S], limit_fen=3000)
    wait_for(
        lambda: a.get("/v1/federation/events?kind=skipped_flagged_owner")["events"], 30, "H routes to C, A skips it"
    )
    assert a.get("/v1/federation/hub")["counts"].get("routed_no_peer", 0) >= 1
    assert fedkit.order_row(a.db_url, order)["status"] == "open"
    assert not [x for x in c.get("/v1/federation/holds")["holds"] if x["order_id"] == order]
    assert fedkit.contracts_on_pool(c.db_url, pool.pool_id) == []

    # the operator re-verifies: C's current checkpoint extends every one A holds, so C is restored
    answer = reverify(a, "C")
    assert answer["status"] == "consistent" and answer["restored"] is True and answer["size"] >= ev["seen"]["size"]
    assert log_status(a, "C") == "consistent" and open_evidence(a, "C") == []
    (closed,) = a.get("/v1/federation/evidence?peer=C")["evidence"]
    assert closed["id"] == ev["id"] and closed["resolution"] == "restored"
    # and routed to again: the hub's next route for the order is filled at C
    wait_for(lambda: fedkit.order_row(a.db_url, order)["status"] == "filled", 45, "order filled at C after restore")
    assert sum(x.devices for x in fedkit.contracts_on_pool(c.db_url, pool.pool_id)) == 4
    assert [(x["peer"], x["devices"]) for x in a.get(f"/v1/federation/contracts?order_id={order}")["contracts"]] == [
        ("C", 4)
    ]
    assert log_status(a, "C") == "consistent"  # later growth checked from the restored checkpoint


async def rebuild_log(c: Proc, keys: list[dict[str, Any]], records: int) -> None:
    """C's new database: the same exchange keys, a fresh log of `records` records (C is stopped)."""
    engine = make_engine(c.db_url)
    await upgrade_engine(engine)
    async with make_sessionmaker(engine).begin() as s:
        s.add_all(ExchangeKey(**k) for k in keys)
    await engine.dispose()
    svc = await build_services(Settings.from_env(c.env()))
    try:
        await svc.identity.init(exist_ok=True)
        for i in range(records):
            async with svc.sessions.begin() as s:
                await svc.ledger.append(s, "contract", f"rewritten-{i}", {"n": i, "tag": "rewritten"})
    finally:
        await svc.federation.close()
        await svc.close()


def test_rewritten_member_log_is_detected_and_stays_flagged(fabric: dict[str, Proc], tmp_path: Any) -> None:
    h, a, b, c = fabric["H"], fabric["A"], fabric["B"], fabric["C"]
    identity = get_json(c.url + "/v1/federation/identity")

    def kept_size(p: Proc) -> int | None:
        """The size of C's last checkpoint `p` verified (its anchor for the next check)."""
        peer = {x["authority"]: x for x in p.get("/v1/federation/peers")["peers"]}["C"]
        return None if peer["checkpoint"] is None else int(peer["checkpoint"]["size"])

    def settled() -> int | None:
        """C's log size once H, A and B have all verified it up to there."""
        size = int(get_json(c.url + "/v1/federation/checkpoint")["size"])
        return size if all(kept_size(p) == size for p in (h, a, b)) else None

    size = int(wait_for(settled, 30, "H, A and B keep C's latest checkpoint", 0.2))
    columns = [attr.key for attr in sa_inspect(ExchangeKey).column_attrs]
    with fedkit.db_session(c.db_url) as s:
        keys = [{name: getattr(k, name) for name in columns} for k in s.scalars(select(ExchangeKey))]
    c.stop()  # C loses its database and rebuilds a different, longer history with the same key
    remove_database(c.db_url)
    asyncio.run(rebuild_log(c, keys, size + 5))
    c.start()
    c.wait_ready()
    assert get_json(c.url + "/v1/federation/identity")["verifier_key"] == identity["verifier_key"]
    assert int(get_json(c.url + "/v1/federation/checkpoint")["size"]) == size + 5

    for p in (h, a, b):
        wait_for(lambda p=p: log_status(p, "C") == "inconsistent", 30, f"{p.authority} flags C", 0.2)
    # H still holds the last summary the old C sent (with free MI300X), but its rounds leave C out
    rounds = h.get("/v1/federation/hub")["rounds"]
    with fedkit.db_session(a.db_url) as s:
        order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=2, models=[MI300X], limit_fen=3000)

    def round_with_order() -> dict[str, Any] | None:
        hub = h.get("/v1/federation/hub")
        return hub if hub["rounds"] > rounds and hub["last_round"]["orders"] >= 1 else None

    hub = wait_for(round_with_order, 30, "a hub round with A's order")
    assert "C" in hub["members"] and hub["last_round"]["members"] == ["A", "B"]
    skipped = a.get("/v1/federation/events?kind=skipped_flagged_owner&limit=1000")["events"]
    assert all(e["detail"]["order_id"] != order for e in skipped)  # not routed at all, so not skipped either

    (ev,) = open_evidence(a, "C")
    assert (
        ev["kept"]["size"] == size and ev["seen"]["size"] == size + 5 and f"not consistent with {size}" in ev["problem"]
    )
    assert [e["seen"]["root"] for e in open_evidence(h, "C")] == [ev["seen"]["root"]]

    # both are C's signed checkpoints: they verify offline with C's key, and no single log extends both
    vk = parse_verifier_key(identity["verifier_key"])
    for side in ("kept", "seen"):
        cp = verify_checkpoint(ev[side]["note"], [NoteVerifier(vk.name, vk.key)], origin=vk.name)
        assert (cp.size, base64.b64encode(cp.root).decode()) == (ev[side]["size"], ev[side]["root"])

    # the operator's re-verification keeps it flagged (API and CLI), the evidence stays open
    answer = reverify(a, "C")
    assert answer["status"] == "inconsistent" and answer["restored"] is False
    (problem,) = answer["problems"]
    assert problem.startswith("kept: checkpoint") and f"not consistent with {size}" in problem
    assert [e["id"] for e in answer["evidence"]] == [ev["id"]]
    pem = save_signing_key(tmp_path / "operator-a.pem", a.operator_key)
    cli = a.cli("peer", "reverify", "C", "--url", a.url, "--key", str(pem))
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 1, (out, err)
    assert log_status(a, "C") == "inconsistent" and [e["id"] for e in open_evidence(a, "C")] == [ev["id"]]
