"""`hetex demo`: the whole market in one command, through the real HTTP API with signed requests.

On a temporary directory (SQLite database, exchange key, export directory) it starts the same aiohttp
application `hetex serve` builds (exchange.cli.serve.prepare) on 127.0.0.1, then acts as every party:
providers register sites, pools and offers in eight regions; buyers submit varied orders; the operator
triggers clearing rounds; providers confirm their contracts and report node-signed usage; the operator
runs settlement; a regulator requests an audit export, downloads the bundle and it is verified offline
with the standalone verifier. Every step checks its outcome; the first failure names the step and why.

Time: clearing rounds, signatures and heartbeats use the wall clock. Contracts last hours to a month, so
the demo fast-forwards the clock that the contract, usage and settlement services read (DemoClock) past
the end of the last contract before usage is reported and settled; the summary states the offset.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from exchange.api.keys import SERVICES
from exchange.audit.verify import VerifyReport, verify_bundle
from exchange.cli.serve import prepare
from exchange.cli.usage import build_usage_envelope
from exchange.client import HetexClient, RemoteError
from exchange.composition import Services
from exchange.demo_market import BUYERS, PROVIDERS, BuyerPlan, OrderPlan, usage_periods
from exchange.services.identity import key_file
from exchange.settings import Settings
from federation.keys import SigningKey, load_signing_key
from federation.note import NoteVerifier, verify_checkpoint
from identifiers.catalogue import Catalogue
from identifiers.cri import parse_cri

T = TypeVar("T")
BALANCE_MODES = ("per_minute", "compute_tier", "subscription", "project")
EXPORT_TIMEOUT_SECONDS = 60.0


class DemoClock:
    """Wall-clock epoch seconds plus a fast-forward offset (read by contracts, usage and settlement)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time()) + self.offset


class StepFailed(Exception):
    """A demo step did not do what it should; `step` names it."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


class Reporter:
    """Where step progress goes (the CLI prints it with rich; tests may collect it)."""

    def started(self, name: str) -> None:
        """A step begins."""

    def finished(self, name: str, detail: str, seconds: float) -> None:
        """A step succeeded."""

    def failed(self, name: str, reason: str, seconds: float) -> None:
        """A step failed."""


@dataclass
class StepRecord:
    """Outcome of one step."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class Party:
    """One participant the demo plays: its key, client and registration."""

    name: str
    role: str
    home_region: str | None
    client: HetexClient
    id: str = ""
    operator_code: str | None = None


@dataclass
class OrderState:
    """An order the demo submitted and what became of it."""

    buyer: str
    plan: OrderPlan
    id: str
    flags: list[str]
    status: str = "open"
    filled_devices: int = 0
    contract_ids: list[str] = field(default_factory=list)
    round_no: int | None = None


def yuan(fen: int | Decimal) -> str:
    """Fen as yuan with two decimals and thousands separators."""
    return f"{Decimal(fen) / 100:,.2f}"


class Demo:
    """Runs the scenario of exchange.demo_market against a real server; `summary` is the machine result."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        reporter: Reporter | None = None,
        seed: int = 2026,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.extra_settings = dict(settings or {})  # Settings overrides (e.g. disclosure_min_orders in tests)
        self.reporter = reporter or Reporter()
        self.rng = random.Random(seed)
        self.clock = DemoClock()
        self.steps: list[StepRecord] = []
        self.runner: web.AppRunner | None = None
        self.svc: Services | None = None
        self.http: aiohttp.ClientSession | None = None
        self.base_url = ""
        self.t0 = 0
        self.providers: list[Party] = []
        self.buyers: dict[str, Party] = {}
        self.operator: Party | None = None
        self.regulator: Party | None = None
        self.pools: list[dict[str, Any]] = []
        self.sites: list[dict[str, Any]] = []
        self.orders: list[OrderState] = []
        self.rounds: list[dict[str, Any]] = []
        self.market: dict[str, Any] = {}
        self.contracts: dict[str, dict[str, Any]] = {}
        self.contract_owner: dict[str, Party] = {}
        self.usage_reports = 0
        self.usage_device_minutes = 0
        self.settlements: list[dict[str, Any]] = []
        self.checkpoint: dict[str, Any] = {}
        self.export: dict[str, Any] = {}
        self.report: VerifyReport | None = None
        self.bundle_path: Path | None = None
        self.batch_id: str | None = None
        self.seconds = 0.0

    # ------------------------------------------------------------------------------------ plumbing

    async def step(self, name: str, fn: Callable[[], Awaitable[str]]) -> None:
        """Run one step; its returned text is the detail line; any error becomes StepFailed(name)."""
        self.reporter.started(name)
        t = time.perf_counter()
        try:
            detail = await fn()
        except StepFailed as exc:
            self._fail(name, exc.reason, t)
            raise
        except RemoteError as exc:
            self._fail(name, f"the exchange answered {exc}", t)
            raise StepFailed(name, f"the exchange answered {exc}") from exc
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._fail(name, reason, t)
            raise StepFailed(name, reason) from exc
        seconds = time.perf_counter() - t
        self.steps.append(StepRecord(name, True, seconds, detail))
        self.reporter.finished(name, detail, seconds)

    def _fail(self, name: str, reason: str, t: float) -> None:
        seconds = time.perf_counter() - t
        self.steps.append(StepRecord(name, False, seconds, reason))
        self.reporter.failed(name, reason, seconds)

    def client(self, key: SigningKey | None = None) -> HetexClient:
        """A signing client on the shared HTTP session."""
        assert self.http is not None
        return HetexClient(self.base_url, key or SigningKey.generate(), session=self.http)

    @property
    def catalogue(self) -> Catalogue:
        """The exchange's accelerator catalogue."""
        assert self.svc is not None
        return self.svc.catalogue

    # ------------------------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        """Every step in order; raises StepFailed on the first failure (the server is always stopped)."""
        started = time.perf_counter()
        try:
            await self.step("start the exchange", self.start_server)
            await self.step("register providers, sites, pools, offers", self.register_providers)
            await self.step("add operator and regulator (admin)", self.add_staff)
            await self.step("register buyers, submit orders (wave 1)", lambda: self.submit_orders(1))
            await self.step("clearing round 1", lambda: self.clearing_round(1))
            await self.step("submit orders (wave 2)", lambda: self.submit_orders(2))
            await self.step("clearing round 2", lambda: self.clearing_round(2))
            await self.step("read fills and market depth", self.read_fills)
            await self.step("providers confirm contracts", self.confirm_contracts)
            await self.step("fast-forward; nodes report signed usage", self.report_usage)
            await self.step("run settlement", self.settle)
            await self.step("fetch and verify the signed checkpoint", self.fetch_checkpoint)
            await self.step("regulator exports an audit bundle", self.audit_export)
            await self.step("verify the bundle offline", self.verify_export)
        finally:
            await self.stop()
        self.seconds = time.perf_counter() - started
        return self.summary()

    async def start_server(self) -> str:
        """The app `hetex serve` builds, on a temporary SQLite database, on a free port of 127.0.0.1."""
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{self.workdir / 'hetex.db'}",
            host="127.0.0.1",
            port=self.port,
            key_dir=self.workdir / "keys",
            exports_dir=self.workdir / "exports",
            round_interval_seconds=0,
            **self.extra_settings,
        )
        app = await prepare(settings)
        svc = app[SERVICES]
        self.svc = svc
        svc.contracts.clock = svc.usage.clock = svc.settlement.clock = self.clock
        self.runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # as `hetex serve`
        await self.runner.setup()
        site = web.TCPSite(self.runner, settings.host, settings.port)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        svc.settings.public_base_url = self.base_url  # the demo knows its own URL: signatures bind to it
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        async with self.http.get(self.base_url + "/healthz") as resp:
            health = await resp.json()
            if resp.status != 200:
                raise StepFailed("start the exchange", f"/healthz answered {resp.status}: {health}")
        self.t0 = int(time.time())
        return f"{self.base_url} (SQLite in {self.workdir}), /healthz {health.get('status', 'ok')}"

    async def stop(self) -> None:
        """Close clients and stop the server."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def register_providers(self) -> str:
        """Each provider registers its key, its sites, pools (CRIs), one offer per pool, and heartbeats."""
        now = int(time.time())
        for plan in PROVIDERS:
            c = self.client()
            me = await c.register("provider", plan.name, plan.home_region)
            party = Party(plan.name, "provider", plan.home_region, c, me["id"], me["operator_code"])
            self.providers.append(party)
            for sp in plan.sites:
                site = await c.add_site(sp.region, sp.name, pue=sp.pue, green_share=sp.green_share)
                if parse_cri(site["cri"]).kind != "site":
                    raise StepFailed("register", f"site CRI {site['cri']} is not a site CRI")
                self.sites.append(site)
                for pp in sp.pools:
                    pool = await c.add_pool(site["cri"], pp.model, pp.devices, devices_per_node=pp.devices_per_node)
                    if parse_cri(pool["cri"], catalogue=self.catalogue).model != pp.model:
                        raise StepFailed("register", f"pool CRI {pool['cri']} does not name {pp.model}")
                    offer = await c.post_offer(
                        pool["cri"],
                        pp.devices,
                        pp.ask_fen,
                        now - 60,
                        window_end=now + 45 * 86_400,
                        min_lease_seconds=3600,
                        billing_modes=list(pp.billing_modes),
                    )
                    self.pools.append(
                        {
                            "provider": plan.name,
                            "region": sp.region,
                            "site": sp.name,
                            "model": pp.model,
                            "domestic": self.catalogue.get(pp.model).domestic,
                            "devices": pp.devices,
                            "ask_fen": pp.ask_fen,
                            "cri": pool["cri"],
                            "offer_id": offer["id"],
                        }
                    )
                beat = await c.heartbeat(site["cri"])
                if beat["live_until"] <= now:
                    raise StepFailed("register", f"heartbeat of {site['cri']} not accepted as live")
        regions = sorted({p["region"] for p in self.pools})
        models = sorted({p["model"] for p in self.pools})
        devices = sum(p["devices"] for p in self.pools)
        return (
            f"{len(self.providers)} providers, {len(self.sites)} sites, {len(self.pools)} pools, {devices} devices; "
            f"{len(regions)} regions, {len(models)} accelerator models"
        )

    async def add_staff(self) -> str:
        """The operator and a regulator, added with the admin service (as `hetex admin` does)."""
        assert self.svc is not None
        for role, name in (("operator", "Exchange operator"), ("regulator", "Compute market regulator (demo)")):
            c = self.client()
            view = await self.svc.participants.add_by_operator(role, name, c.key.public.to_base64())
            party = Party(name, role, None, c, view.id)
            me = await c.me()
            if me["role"] != role:
                raise StepFailed("admin", f"{name} is registered as {me['role']}, not {role}")
            if role == "operator":
                self.operator = party
            else:
                self.regulator = party
        return "operator and regulator keys registered; both authenticate with signed requests"

    async def _buyer(self, plan: BuyerPlan) -> Party:
        party = self.buyers.get(plan.name)
        if party is None:
            c = self.client()
            me = await c.register("buyer", plan.name, plan.home_region)
            party = Party(plan.name, "buyer", plan.home_region, c, me["id"])
            self.buyers[plan.name] = party
        return party

    async def submit_orders(self, wave: int) -> str:
        """Buyers submit this wave's orders (Idempotency-Key; a retry returns the same order)."""
        now = int(time.time())
        made = []
        for bp in BUYERS:
            wave_orders = [o for o in bp.orders if o.wave == wave]
            if not wave_orders:
                continue
            buyer = await self._buyer(bp)
            for plan in wave_orders:
                key = f"demo-{hashlib.sha256(plan.label.encode()).hexdigest()[:16]}"
                spec = plan.spec(now)
                view = await buyer.client.submit_order(spec, key)
                again = await buyer.client.submit_order(spec, key)
                if again["id"] != view["id"] or buyer.client.last_status != 200:
                    raise StepFailed("orders", "a retried submission did not return the original order")
                state = OrderState(bp.name, plan, view["id"], [f["code"] for f in view["flags"]])
                self.orders.append(state)
                made.append(state)
        modes = Counter(o.plan.body["billing_mode"] for o in made)
        by_mode = ", ".join(f"{m} {n}" for m, n in sorted(modes.items()))
        return f"{len(made)} orders from {len({o.buyer for o in made})} buyers ({by_mode})"

    async def clearing_round(self, number: int) -> str:
        """The operator triggers a round; its welfare must not exceed the LP bound and its audit must pass."""
        assert self.operator is not None
        rnd = await self.operator.client.request("POST", "/v1/rounds")
        if rnd.get("status") != "completed":
            raise StepFailed(f"round {number}", f"round ended {rnd.get('status')}: {rnd.get('error')}")
        welfare, bound = int(rnd["welfare_fen"]), int(rnd["lp_bound_fen"])
        if welfare > bound:
            raise StepFailed(f"round {number}", f"welfare {welfare} fen exceeds the LP bound {bound} fen")
        audit = rnd.get("audit") or {}
        hard = [
            c
            for c in audit.get("checks", [])
            if c.get("violations") and c.get("name") not in ("no_envy", "fee_shortfall_fen")
        ]
        if hard or not audit.get("budget_balanced", True):
            raise StepFailed(f"round {number}", f"clearing audit failed: {hard or 'budget not balanced'}")
        rnd["number"] = number
        self.rounds.append(rnd)
        return (
            f"{rnd['orders']} orders x {rnd['offers']} offers -> {rnd['contracts']} contracts, "
            f"{rnd['matched_devices']} devices; welfare {yuan(welfare)} yuan, LP bound {yuan(bound)} yuan, "
            f"gap {Decimal(rnd['gap']) * 100:.2f}%"
        )

    async def read_fills(self) -> str:
        """Each buyer reads its orders' fills; the market view gives prices by region x family."""
        for o in self.orders:
            buyer = self.buyers[o.buyer]
            view = await buyer.client.request("GET", f"/v1/orders/{o.id}")
            fills = await buyer.client.request("GET", f"/v1/orders/{o.id}/fills")
            o.status, o.filled_devices = view["status"], view["filled_devices"]
            for cid in fills["contract_ids"]:
                c = await buyer.client.request("GET", f"/v1/contracts/{cid}")
                self.contracts[cid] = c
                o.contract_ids.append(cid)
                o.round_no = next((r["number"] for r in self.rounds if r["id"] == c.get("round_id")), None)
            if o.plan.expect_fill and not o.contract_ids:
                raise StepFailed("fills", f"order '{o.plan.label}' of {o.buyer} was not filled ({o.status})")
            if not o.plan.expect_fill and o.contract_ids:
                raise StepFailed("fills", f"order '{o.plan.label}' was filled below every ask")
        modes = Counter(c["billing_mode"] for c in self.contracts.values())
        missing = [m for m in BALANCE_MODES if not modes.get(m)]
        if missing:
            raise StepFailed("fills", f"no contract in billing mode(s) {', '.join(missing)}")
        assert self.operator is not None  # the operator sees every class price (the public needs enough orders)
        self.market = await self.operator.client.request("GET", "/v1/market")
        by_provider = {p.id: p for p in self.providers}
        for cid, c in self.contracts.items():
            self.contract_owner[cid] = by_provider[c["provider_id"]]
        filled = sum(1 for o in self.orders if o.contract_ids)
        return f"{filled} of {len(self.orders)} orders filled by {len(self.contracts)} contracts; market view read"

    async def confirm_contracts(self) -> str:
        """Each provider confirms the start of its contracts (pending -> confirmed)."""
        for cid, provider in self.contract_owner.items():
            view = await provider.client.request("POST", f"/v1/contracts/{cid}/confirm")
            if view["status"] != "confirmed":
                raise StepFailed("confirm", f"contract {cid} is {view['status']} after confirmation")
            self.contracts[cid] = view
        providers = len({p.id for p in self.contract_owner.values()})
        return f"{len(self.contract_owner)} contracts confirmed by {providers} providers"

    async def report_usage(self) -> str:
        """Fast-forward past the last contract end, then each node signs its usage (DSSE) and sends it."""
        last_end = max(c["end_at"] for c in self.contracts.values())
        self.clock.offset = last_end + 120 - int(time.time())
        for cid, c in sorted(self.contracts.items(), key=lambda kv: kv[1]["start_at"]):
            provider = self.contract_owner[cid]
            meter = f"node-{cid[-6:]}"
            for seq, (start, end) in enumerate(usage_periods(c["billing_mode"], c["start_at"], c["end_at"]), 1):
                full = c["devices"] * (end - start) // 60
                used = (
                    full
                    if c["billing_mode"] in ("subscription", "project")
                    else int(full * self.rng.uniform(0.86, 1.0))
                )
                env = build_usage_envelope(
                    provider.client.key,
                    provider.client.keyid,
                    contract_id=cid,
                    meter_id=meter,
                    seq=seq,
                    period_start=start,
                    period_end=end,
                    device_minutes=used,
                    availability_bps=self.rng.randint(9950, 10_000),
                )
                view = await provider.client.request("POST", f"/v1/contracts/{cid}/usage", env)
                if provider.client.last_status != 201 or view.get("flags"):
                    raise StepFailed("usage", f"usage {seq} of {cid} answered {provider.client.last_status} {view}")
                self.usage_reports += 1
                self.usage_device_minutes += used
        days = self.clock.offset / 86_400
        return (
            f"clock +{days:.1f} days; {self.usage_reports} signed usage reports, "
            f"{self.usage_device_minutes:,} device-minutes"
        )

    async def settle(self) -> str:
        """The operator settles everything due in one batch; every record must balance."""
        assert self.operator is not None
        batch = await self.operator.client.request("POST", "/v1/settlements/run", {})
        records = batch["records"]
        if not records:
            raise StepFailed("settlement", "the batch settled nothing")
        for r in records:
            if r["buyer_debit_fen"] != r["provider_credit_fen"] + r["fee_fen"]:
                raise StepFailed("settlement", f"record {r['id']} does not balance: {r}")
        settled = {r["contract_id"] for r in records}
        unsettled = set(self.contracts) - settled
        if unsettled:
            raise StepFailed("settlement", f"{len(unsettled)} contracts have no settlement record")
        for cid, provider in self.contract_owner.items():
            view = await provider.client.request("GET", f"/v1/contracts/{cid}")
            if view["status"] != "completed":
                raise StepFailed("settlement", f"contract {cid} is {view['status']} after settling its last period")
            self.contracts[cid] = view
        again = await self.operator.client.request("POST", "/v1/settlements/run", {})
        if again["count"]:
            raise StepFailed("settlement", f"a second run settled {again['count']} more records")
        self.settlements = records
        self.batch_id = batch["batch_id"]
        total = sum(r["buyer_debit_fen"] for r in records)
        fee = sum(r["fee_fen"] for r in records)
        return (
            f"batch of {len(records)} records: buyers {yuan(total)} yuan = providers {yuan(total - fee)} "
            f"+ fees {yuan(fee)}"
        )

    async def fetch_checkpoint(self) -> str:
        """GET the signed checkpoint and verify it with the exchange keys it publishes."""
        assert self.http is not None
        async with self.http.get(self.base_url + "/v1/ledger/keys") as resp:
            keys = await resp.json()
        async with self.http.get(self.base_url + "/v1/ledger/checkpoint") as resp:
            note = await resp.text()
        verifiers = [NoteVerifier.from_string(k["verifier_key"]) for k in keys["keys"]]
        cp = verify_checkpoint(note, verifiers, origin=keys["origin"])
        self.checkpoint = {"origin": keys["origin"], "size": cp.size, "root": cp.root.hex(), "key_id": keys["current"]}
        return f"{keys['origin']} size {cp.size} root {cp.root.hex()[:16]}... signed by {keys['current']}"

    async def audit_export(self) -> str:
        """The regulator asks for every record of the demo period, polls progress, downloads the bundle."""
        assert self.regulator is not None
        reg = self.regulator.client
        period = {"from": self.t0 - 3600, "to": self.clock() + 86_400}
        job = await reg.request("POST", "/v1/audit/exports", period)
        polls = 0
        deadline = time.monotonic() + EXPORT_TIMEOUT_SECONDS
        while job["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise StepFailed("export", f"export still {job['status']} after {EXPORT_TIMEOUT_SECONDS:.0f} s")
            await asyncio.sleep(0.1)
            job = await reg.request("GET", f"/v1/audit/exports/{job['id']}")
            polls += 1
        if job["status"] != "done":
            raise StepFailed("export", f"export {job['status']}: {job.get('error')}")
        url = reg.url(job["bundle"]["href"])
        path = self.workdir / f"hetex-audit-{job['id']}.tar.gz"
        assert self.http is not None
        async with self.http.get(url, headers=reg.sign("GET", url, b"")) as resp:
            if resp.status != 200:
                raise StepFailed("export", f"bundle download answered {resp.status}")
            data = await resp.read()
        if hashlib.sha256(data).hexdigest() != job["bundle"]["sha256"]:
            raise StepFailed("export", "the downloaded bundle's SHA-256 differs from the job's")
        path.write_bytes(data)
        self.bundle_path = path
        self.export = {
            "id": job["id"],
            "records_exported": job["progress"]["records_exported"],
            "records_total": job["progress"]["records_total"],
            "checkpoint_size": job["checkpoint_size"],
            "bundle_bytes": len(data),
            "bundle_sha256": job["bundle"]["sha256"],
            "polls": polls,
        }
        return (
            f"export {job['id'][:8]}: {job['progress']['records_exported']} records at checkpoint size "
            f"{job['checkpoint_size']}, {len(data):,} bytes (progress polled {polls}x)"
        )

    async def verify_export(self) -> str:
        """verify_bundle with the exchange key taken from its key directory (out of band)."""
        assert self.bundle_path is not None
        assert self.svc is not None
        current = await self.svc.identity.current()  # the out-of-band step: the operator hands over the key
        assert current is not None
        key_path = key_file(self.workdir / "keys", current.key_id)
        trusted = (await asyncio.to_thread(load_signing_key, key_path)).public
        report = await asyncio.to_thread(verify_bundle, self.bundle_path, [trusted])
        self.report = report
        if not report.ok:
            problems = "; ".join(str(p) for p in report.problems[:5])
            raise StepFailed("verify", f"{len(report.problems) + report.problems_omitted} problem(s): {problems}")
        settled = (report.totals or {}).get("settled", {})
        ours = sum(r["buyer_debit_fen"] for r in self.settlements)
        if settled.get("fen") != ours:
            raise StepFailed("verify", f"bundle settles {settled.get('fen')} fen, the settlement API said {ours}")
        return (
            f"OK: {report.records} records, {report.signatures_checked} signatures, {report.proofs_checked} "
            f"inclusion proofs; settled {yuan(ours)} yuan matches the API"
        )

    # ------------------------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        """The machine-readable result of a successful run."""
        by_mode: dict[str, dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(("contracts", "records", "buyer_debit_fen", "provider_credit_fen", "fee_fen"), 0)
        )
        for c in self.contracts.values():
            by_mode[c["billing_mode"]]["contracts"] += 1
        for r in self.settlements:
            cell = by_mode[r["billing_mode"]]
            cell["records"] += 1
            for k in ("buyer_debit_fen", "provider_credit_fen", "fee_fen"):
                cell[k] += r[k]
        report = self.report
        return {
            "ok": all(s.ok for s in self.steps),
            "seconds": round(self.seconds, 2),
            "server": {"url": self.base_url, "database": "sqlite", "workdir": str(self.workdir)},
            "clock_fast_forward_seconds": self.clock.offset,
            "steps": [s.to_json() for s in self.steps],
            "providers": [{"name": p.name, "id": p.id, "operator_code": p.operator_code} for p in self.providers],
            "buyers": [{"name": b.name, "id": b.id, "home_region": b.home_region} for b in self.buyers.values()],
            "regions": sorted({p["region"] for p in self.pools}),
            "models": sorted({p["model"] for p in self.pools}),
            "pools": self.pools,
            "orders": [
                {
                    "id": o.id,
                    "buyer": o.buyer,
                    "label": o.plan.label,
                    "billing_mode": o.plan.body["billing_mode"],
                    "status": o.status,
                    "filled_devices": o.filled_devices,
                    "contracts": o.contract_ids,
                    "flags": o.flags,
                }
                for o in self.orders
            ],
            "rounds": [
                {
                    k: r.get(k)
                    for k in (
                        "id",
                        "number",
                        "orders",
                        "offers",
                        "contracts",
                        "matched_devices",
                        "welfare_fen",
                        "lp_bound_fen",
                        "gap",
                        "pricing_rule",
                        "audit",
                    )
                }
                for r in self.rounds
            ],
            "market": self.market,
            "contracts": [
                {
                    k: c.get(k)
                    for k in (
                        "id",
                        "buyer_id",
                        "provider_id",
                        "region",
                        "model",
                        "devices",
                        "start_at",
                        "end_at",
                        "buyer_price_fen",
                        "provider_price_fen",
                        "billing_mode",
                        "billing_terms",
                        "status",
                    )
                }
                for c in self.contracts.values()
            ],
            "contracts_by_mode": {m: by_mode[m]["contracts"] for m in BALANCE_MODES},
            "usage": {"reports": self.usage_reports, "device_minutes": self.usage_device_minutes},
            "settlements": [
                {
                    k: r[k]
                    for k in (
                        "id",
                        "contract_id",
                        "billing_mode",
                        "period_start",
                        "period_end",
                        "device_minutes",
                        "buyer_debit_fen",
                        "provider_credit_fen",
                        "fee_fen",
                    )
                }
                | {"balanced": r["buyer_debit_fen"] == r["provider_credit_fen"] + r["fee_fen"]}
                for r in self.settlements
            ],
            "settlement_by_mode": {m: by_mode[m] for m in BALANCE_MODES},
            "checkpoint": self.checkpoint,
            "audit_export": self.export,
            "audit_verification": None
            if report is None
            else {
                "ok": report.ok,
                "records": report.records,
                "signatures_checked": report.signatures_checked,
                "proofs_checked": report.proofs_checked,
                "trusted_key_pinned": report.trusted_key_pinned,
                "trusted": report.trusted,
                "exchange_key_id": report.exchange_key_id,
                "problems": [p.to_json() for p in report.problems],
                "totals": report.totals,
            },
        }


async def run_demo(workdir: Path, *, port: int = 0, reporter: Reporter | None = None) -> tuple[Demo, dict[str, Any]]:
    """Run the demo in `workdir`; returns the demo (for tables) and its summary, or raises StepFailed."""
    demo = Demo(workdir, port=port, reporter=reporter)
    summary = await demo.run()
    return demo, summary
