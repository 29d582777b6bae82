"""`hetex bench federation --processes`: the national market through a hub over HTTP between real
`hetex serve` processes (one hub, one process per member, each its own SQLite file and keys, peered).

Each member's pools (free devices as offers) and orders (device and SCU) are written into its database. Coupled
(the default, specs/federation.md section 9.3): members run no rounds of their own, send the hub their
supply curves and every open order, the hub clears the fabric and routes each order to its owners (the
buyer's own exchange included), members run the two-phase protocol with other owners and a restricted
round for what was routed to themselves. Residual (`coupled=False`): members clear locally every 2 s and
send only the orders left. Reported: welfare of the contracts made (from the generated orders' limits
and pools' asks) against the merged market of the same orders and against greedy forwarding on
it, fill rate, peer messages per cross-exchange order, order-to-contract latency p50/p99 (order visible
-> filled, polled every 0.1 s), and where welfare went (orders missed, holds not committed, hub rounds).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from exchange.bench.api import _free_port
from exchange.composition import build_services
from exchange.settings import Settings
from exchange.storage.contracts import Contract
from exchange.storage.federation import OutboundHold
from exchange.storage.orders import Order as OrderRow
from exchange.storage.participants import Participant
from exchange.storage.registration import Offer, Pool, Site
from identifiers.catalogue import load_catalogue
from identifiers.cri import mint_pool_cri, mint_site_cri
from identifiers.ids import new_id_str
from matching.fabric import Fabric, clear_greedy_fabric, clear_hub_fabric, clear_merged, order_welfare
from matching.model import Order

Progress = Callable[[str, float], None]
ENV = {
    "HETEX_FEDERATION_SUMMARY_INTERVAL_SECONDS": "1",
    "HETEX_FEDERATION_SUMMARY_TTL_SECONDS": "30",
    "HETEX_FEDERATION_SYNC_INTERVAL_SECONDS": "2",
    "HETEX_FEDERATION_FORWARD_INTERVAL_SECONDS": "0.2",
    "HETEX_FEDERATION_FORWARD_AFTER_SECONDS": "3",
    "HETEX_FEDERATION_SWEEP_INTERVAL_SECONDS": "0.5",
    "HETEX_FEDERATION_HOLD_TTL_SECONDS": "10",
    "HETEX_FEDERATION_PEER_TIMEOUT_SECONDS": "15",
    "HETEX_ROUND_INTERVAL_SECONDS": "2",
    "HETEX_CHECKPOINT_INTERVAL_SECONDS": "2",
    "HETEX_FEDERATION_HUB_ROUND_INTERVAL_SECONDS": "0.5",
}


# the generator's model codes that the exchange catalogue (identifiers/catalogue) spells differently: an
# exchange refuses a pool or an order term of a model it does not know, so unmapped they would be
# invisible to the processes but not to the merged reference
CATALOGUE_CODE = {"NV-A100-80G": "NV-A100-80G-SXM", "HYG-K100-AI": "HG-K100-AI", "ILU-BI-V100": "IX-BI-V100"}


def _code(model: str) -> str:
    return CATALOGUE_CODE.get(model, model)


def _process_market(fabric: Fabric) -> Fabric:
    """The fabric as the processes see it: reservations folded into smaller pools (offers carry free devices
    only), catalogue model codes and SCU (an exchange converts SCU orders with its catalogue), and orders as
    `_seed_orders` writes them (explicit models, so no memory floor), so the merged reference clears exactly
    the market the processes see. SCU orders are kept (the hub routes them like device orders)."""
    catalogue = load_catalogue()

    def scu(model: str) -> Decimal | None:
        return catalogue.get(model).scu if model in catalogue else None

    pools = []
    for p in fabric.market.pools:
        held = max((r.devices for r in p.reserved), default=0)
        if p.devices - held > 0:
            free = p.devices - held
            code = _code(p.model)
            pools.append(replace(p, model=code, scu=scu(code), devices=free, devices_per_node=free, reserved=()))
    orders = tuple(
        replace(
            o,
            min_memory_gb=0,
            models=tuple(sorted(_code(m) for m in o.models)),
            limits={_code(m): v for m, v in sorted(o.limits.items())},
        )
        for o in fabric.market.orders
    )
    return replace(fabric, market=replace(fabric.market, pools=tuple(pools), orders=orders))


class _Proc:
    def __init__(self, authority: str, root: Path, host: str, extra: dict[str, str]) -> None:
        self.authority = authority
        self.root = root / authority
        self.root.mkdir(parents=True)
        self.host = host
        self.port = _free_port()
        self.url = f"http://{host}:{self.port}"
        self.db = self.root / "hetex.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HETEX_")}
        self.env.update(ENV)
        self.env.update(
            {
                "HETEX_DATABASE_URL": f"sqlite:///{self.db}",
                "HETEX_KEY_DIR": str(self.root / "keys"),
                "HETEX_AUTHORITY": authority,
                "HETEX_ORIGIN": f"{authority.lower()}.bench.hetex/log",
                "HETEX_PUBLIC_BASE_URL": self.url,
                **extra,
            }
        )
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "serve.log").open("ab")
        cmd = [sys.executable, "-m", "exchange", "serve", "--host", self.host, "--port", str(self.port)]
        self.popen = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def get(self, path: str, tries: int = 3) -> Any:
        for attempt in range(tries):  # a loaded child may drop a connection (per-address cap): ask again
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as resp:  # noqa: S310 (our own child)
                    return json.loads(resp.read())
            except ConnectionResetError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.5)
        return None

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.authority} exited; see {self.root / 'serve.log'}")
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"{self.authority} did not start; see {self.root / 'serve.log'}")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()

    def session(self) -> Session:
        engine = create_engine(f"sqlite:///{self.db}", connect_args={"timeout": 30}, poolclass=NullPool)
        return Session(engine)


def _participant(s: Session, role: str, name: str) -> str:
    pid = new_id_str()
    key = secrets.token_urlsafe(32)[:43] + "="
    s.add(Participant(id=pid, role=role, name=name, public_key=key, key_id=secrets.token_hex(4), status="active",
                      created_at=int(time.time())))  # fmt: skip
    return pid


def _wait_for(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the hub did not see every member's supply summary")
        time.sleep(0.2)


def _seed_pools(proc: _Proc, fabric: Fabric, member: str) -> dict[str, str]:
    """Write the member's pools (one provider, site, pool and open offer each); database pool id ->
    generated pool id."""
    now = int(time.time())
    offers: dict[str, str] = {}
    with proc.session() as s, s.begin():
        provider = _participant(s, "provider", "bench provider")
        s.flush()
        for i, p in enumerate(x for x in fabric.market.pools if fabric.pool_owner[x.id] == member):
            site_cri = mint_site_cri(member, p.region, f"PR{i:03d}")
            site = Site(id=new_id_str(), cri=str(site_cri), provider_id=provider, region=p.region,
                        site_code=site_cri.site or "", name=f"site {i}", status="active",
                        last_heartbeat_at=now + 7 * 86400, created_at=now)  # fmt: skip
            s.add(site)
            s.flush()
            pool = Pool(id=new_id_str(), cri=str(mint_pool_cri(site_cri, p.model)), site_id=site.id, model=p.model,
                        devices=p.devices, memory_gb=p.memory_gb, nodes=1, devices_per_node=p.devices,
                        status="active", created_at=now)  # fmt: skip
            s.add(pool)
            s.flush()
            offer = Offer(id=new_id_str(), pool_id=pool.id, provider_id=provider, devices=p.devices,
                          window_start=now - 60, window_end=None, min_lease_seconds=60, ask_fen=p.ask_fen,
                          billing_modes=["per_minute"], status="open", created_at=now)  # fmt: skip
            s.add(offer)
            offers[pool.id] = p.id
    return offers


def _seed_orders(s: Session, fabric: Fabric, member: str, now: int) -> dict[str, str]:
    """Add the member's open orders (device and SCU) in `s`, created at `now` (the caller commits); database order
    id -> generated id."""
    orders: dict[str, str] = {}
    buyer = _participant(s, "buyer", "bench buyer")
    s.flush()
    for o in (x for x in fabric.market.orders if fabric.order_owner[x.id] == member):
        spec: dict[str, Any] = {
            "models": list(o.models),
            "duration_seconds": o.duration_seconds,
            "billing_mode": "per_minute",
            "all_or_nothing": True,
            "max_pools": o.max_pools,
            "same_model": o.same_model,
        }
        if o.quantity_scu is not None:  # an SCU order: quantity in SCU, limit per SCU-hour
            spec.update(quantity_scu=str(o.quantity_scu), limit_fen_per_scu_hour=o.limit_fen_per_scu_hour)
        else:
            spec.update(quantity_devices=o.quantity_devices, limit_fen_per_device_hour=dict(o.limits))
        oid = new_id_str()
        s.add(OrderRow(id=oid, buyer_id=buyer, idempotency_key=oid, request_hash="0" * 64, spec=spec,
                       billing_mode="per_minute", status="open", quantity_devices=o.quantity_devices,
                       filled_devices=0, created_at=now))  # fmt: skip
        orders[oid] = o.id
    return orders


def _welfare(fabric: Fabric, contracts: list[tuple[str, str, int, int, int]]) -> int:
    """Welfare of contracts (order id, pool id, devices, start, end) in generated ids, fen."""
    from matching.fabric import order_welfare
    from matching.model import Allocation

    orders: dict[str, Order] = {o.id: o for o in fabric.market.orders}
    by_order: dict[str, list[Allocation]] = {}
    for oid, pid, n, start, end in contracts:
        by_order.setdefault(oid, []).append(Allocation(oid, pid, n, start, end, 0, 0, 0, 0, 0))
    return sum(order_welfare(fabric.market, orders[oid], allocs) for oid, allocs in by_order.items())


def run_http(
    fabric: Fabric,
    progress: Progress | None = None,
    *,
    settle_seconds: float = 90,
    coupled: bool = True,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Run the fabric over HTTP through a hub; the figures (see the module docstring)."""
    say = progress or (lambda _s, _f: None)
    fabric = _process_market(fabric)
    merged = clear_merged(fabric)
    greedy = clear_greedy_fabric(fabric)
    in_process = clear_hub_fabric(fabric)
    members = list(fabric.members)
    # coupled: members run no rounds of their own; every open order goes to the hub, which routes each to
    # its owners (the member's own capacity included), and the member clears what was routed to it
    member_env = {"HETEX_FEDERATION_HUB": "H"}
    if coupled:
        member_env.update({"HETEX_FEDERATION_HUB_COUPLED": "true", "HETEX_ROUND_INTERVAL_SECONDS": "0"})
    with tempfile.TemporaryDirectory(prefix="hetex-fedbench-") as tmp:
        root = keep if keep is not None else Path(tmp)  # `keep`: the processes' folders and logs stay
        hub_env = {"HETEX_FEDERATION_HUB_MODE": "true", "HETEX_ROUND_INTERVAL_SECONDS": "0"}  # it has no pools
        hub = _Proc("H", root, "127.0.0.31", hub_env)
        procs = {m: _Proc(m, root, f"127.0.0.{32 + i}", member_env) for i, m in enumerate(members)}
        everyone = [hub, *procs.values()]
        try:
            say("starting processes", 0.05)
            for p in everyone:
                p.start()
            for p in everyone:
                p.wait_ready()
            say("peering", 0.2)
            identities = {p.authority: p.get("/v1/federation/identity") for p in everyone}

            async def peer_all() -> None:
                for p in everyone:
                    svc = await build_services(Settings.from_env(p.env))
                    try:
                        for q in everyone:
                            if q is not p:
                                key = identities[q.authority]["verifier_key"]
                                await svc.federation.peers.add_peer(q.url, key, q.authority)
                    finally:
                        await svc.federation.close()
                        await svc.close()

            asyncio.run(peer_all())
            say("seeding", 0.3)
            offer_map: dict[str, dict[str, str]] = {}
            order_map: dict[str, dict[str, str]] = {}
            for m, p in procs.items():
                offer_map[m] = _seed_pools(p, fabric, m)
            # the orders arrive once the hub has every member's curves (as in the merged market, where
            # every pool is there before the round), at one instant at every member: they are written
            # with a creation time a few seconds ahead, and an exchange counts an order from its
            # creation time on (a loaded member may take a second to commit; the instant is the same)
            _wait_for(lambda: len(hub.get("/v1/federation/hub")["members"]) == len(procs), 60)
            arrive = int(time.time()) + 3
            for m, p in procs.items():
                with p.session() as s, s.begin():
                    order_map[m] = _seed_orders(s, fabric, m, arrive)
            t_seed = time.monotonic() + max(0.0, arrive - time.time())
            time.sleep(max(0.0, t_seed - time.monotonic()))
            filled_at: dict[str, float] = {}
            total = sum(len(v) for v in order_map.values())
            deadline = time.monotonic() + settle_seconds
            last_change = time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - last_change < 15:
                for m, p in procs.items():
                    with p.session() as s:
                        states = s.execute(select(OrderRow.id, OrderRow.status)).all()
                    for oid, status in states:  # the member's own orders (not the mirrors of peers' orders)
                        if status == "filled" and oid in order_map[m] and oid not in filled_at:
                            filled_at[oid] = time.monotonic() - t_seed
                            last_change = time.monotonic()
                say(f"settling ({len(filled_at)}/{total} filled)", 0.3 + 0.7 * min(1.0, len(filled_at) / max(1, total)))
                time.sleep(0.1)
            contracts: list[tuple[str, str, int, int, int]] = []
            cross = 0
            for m, p in procs.items():
                with p.session() as s:
                    rows = s.execute(
                        select(
                            Contract.order_id, Contract.pool_id, Contract.devices, Contract.start_at, Contract.end_at
                        ).where(Contract.status != "cancelled")
                    ).all()
                for order_id, pool_id, n, start, end in rows:
                    gen_pool = offer_map[m].get(pool_id)
                    gen_order = order_map[m].get(order_id)
                    if gen_pool is None:
                        continue
                    if gen_order is None:  # a mirror order: the buyer's exchange holds the original
                        cross += 1
                        continue
                    contracts.append((gen_order, gen_pool, n, start, end))
            # cross-exchange contracts: the owner's pool and the buyer's order, from the buyer's peer_contracts
            contracts += _cross_contracts(procs, offer_map, order_map)
            welfare = _welfare(fabric, contracts)
            stats = {m: p.get("/v1/federation/stats") for m, p in procs.items()}
            sent: dict[str, int] = {}
            for st in stats.values():
                for k, v in st["messages_sent"].items():
                    sent[k] = sent.get(k, 0) + int(v)
            protocol = sent.get("order_offer", 0) + sent.get("hold_commit", 0) + sent.get("hold_release", 0)
            forwarded = len({c[0] for c in _cross_contracts(procs, offer_map, order_map)})
            lat = sorted(filled_at.values())
            hub_view = hub.get("/v1/federation/hub")
            refusals: dict[str, int] = {}
            for p in procs.values():
                with p.session() as s:
                    for status, error in s.execute(select(OutboundHold.status, OutboundHold.error)).all():
                        if status != "committed":
                            key = f"{status}: {(error or '').split(' (')[0]}"
                            refusals[key] = refusals.get(key, 0) + 1
            member_counts: dict[str, int] = {}
            for p in procs.values():
                for k, v in p.get("/v1/federation/hub")["counts"].items():
                    member_counts[k] = member_counts.get(k, 0) + int(v)
        finally:
            for p in everyone:
                p.stop()

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None

    def ratio(w: int) -> str:
        return str(round(w / merged.welfare_fen, 4)) if merged.welfare_fen else "0"

    got = {c[0] for c in contracts}
    scu_ids = {o.id for o in fabric.market.orders if o.quantity_scu is not None}
    scu_filled, scu_exact = _scu_fills(fabric, contracts)
    want = {a.order_id for a in merged.allocations}
    orders_by_id = {o.id: o for o in fabric.market.orders}
    missed = sorted(want - got)
    return {
        "http_mode": "coupled" if coupled else "residual",
        "http_orders": total,
        "http_merged_welfare_fen": merged.welfare_fen,
        "http_welfare_fen": welfare,
        "http_welfare_ratio_to_merged": ratio(welfare),
        "http_welfare_ratio_greedy": ratio(greedy.welfare_fen),
        "http_welfare_ratio_in_process_hub": ratio(in_process.welfare_fen),
        "http_merged_fill_rate": str(round(merged.filled_orders / max(1, total), 4)),
        "http_greedy_fill_rate": str(round(greedy.filled_orders / max(1, total), 4)),
        # where the welfare goes: orders the merged market fills that the processes did not (and the reverse)
        "http_missed_orders": len(missed),
        "http_missed_welfare_fen": sum(
            order_welfare(fabric.market, orders_by_id[o], [a for a in merged.allocations if a.order_id == o])
            for o in missed
        ),
        "http_extra_orders": len(got - want),
        "http_member_counts": member_counts,
        "http_holds_not_committed": refusals,
        **({"http_contracts": contracts} if keep is not None else {}),
        "http_fill_rate": str(round(len(filled_at) / max(1, total), 4)),
        # SCU orders: how many there were, were filled (merged: filled in the merged market), and filled
        # exactly (the SCU reached, a device fewer would not: never over- or under-filled across exchanges)
        "http_scu_orders": sum(1 for o in fabric.market.orders if o.quantity_scu is not None),
        "http_scu_orders_filled": scu_filled,
        "http_scu_orders_filled_exactly": scu_exact,
        "http_scu_orders_filled_merged": len({a.order_id for a in merged.allocations} & scu_ids),
        "http_cross_exchange_orders": forwarded,
        "http_peer_messages_per_order": str(round(protocol / max(1, forwarded), 3)),
        "http_messages_sent": sent,
        "http_order_to_contract_ms_p50": pct(0.5),
        "http_order_to_contract_ms_p99": pct(0.99),
        "http_hub_rounds": hub_view["rounds"],
        # seconds after the orders were written, orders cleared, routes sent (the hub's last rounds)
        "http_hub_round_timeline": [
            [round(r["monotonic"] - t_seed, 2), r["orders"], r["routes"]] for r in hub_view["recent_rounds"]
        ],
    }


def _scu_fills(fabric: Fabric, contracts: list[tuple[str, str, int, int, int]]) -> tuple[int, int]:
    """SCU orders with contracts, and those whose contracts reach the order's SCU with no device to spare."""
    scu = {p.id: p.scu for p in fabric.market.pools}
    orders = {o.id: o for o in fabric.market.orders if o.quantity_scu is not None}
    got: dict[str, list[Decimal]] = {}
    for oid, pid, n, _s, _e in contracts:
        if oid in orders:
            got.setdefault(oid, []).extend([scu[pid] or Decimal(0)] * n)
    exact = 0
    for oid, units in got.items():
        want = orders[oid].quantity_scu or Decimal(0)
        exact += int(sum(units) >= want and sum(units) - max(units) < want)
    return len(got), exact


def _cross_contracts(
    procs: dict[str, _Proc], offer_map: dict[str, dict[str, str]], order_map: dict[str, dict[str, str]]
) -> list[tuple[str, str, int, int, int]]:
    """Cross-exchange contracts seen at the buyer's exchange, in generated ids."""
    from exchange.storage.federation import PeerContract
    from federation.peering import envelope_json

    out = []
    for m, p in procs.items():
        with p.session() as s:
            rows = s.scalars(select(PeerContract).where(PeerContract.side == "buyer")).all()
            bodies = [envelope_json(r.envelope) for r in rows]
        for b in bodies:
            owner = str(b["owner_authority"])
            gen_order = order_map[m].get(str(b["order_id"]))
            gen_pool = offer_map.get(owner, {}).get(str(b["pool_id"]))
            if gen_order and gen_pool:
                out.append((gen_order, gen_pool, int(b["devices"]), int(b["start_at"]), int(b["end_at"])))
    return out
