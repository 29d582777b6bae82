"""The agent loop: heartbeat the site, scan the devices, keep the site's offers within the healthy devices,
meter the contracts the exchange assigned to this node, journal signed usage, send it until accepted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from exchange.agent import meter
from exchange.agent.config import AgentConfig
from exchange.agent.discovery import Source
from exchange.agent.journal import Journal, PendingReport
from exchange.agent.logs import event
from exchange.agent.metrics import AgentMetrics
from exchange.agent.sources.model import Scan, SourceParseError
from exchange.client import HetexClient, RemoteAuthenticationError, RemoteError
from exchange.services.usage import USAGE_PAYLOAD_TYPE, usage_payload
from federation.dsse import sign_envelope

#: usage refusals that clear up by themselves (retry later); any other refusal is final
RETRY_REASONS = frozenset({"in_future", "not_confirmed"})
METERED_STATUSES = frozenset({"confirmed", "completed", "cancelled"})
#: contracts that ended this long ago are still listed at each refresh (a node away for up to a week still
#: reports their last periods); older ones were metered to the end already or never started here
CONTRACT_LOOKBACK_SECONDS = 7 * 86_400
NETWORK_ERRORS = (OSError, aiohttp.ClientError, asyncio.TimeoutError)


def span_of(contract: dict[str, Any]) -> meter.ContractSpan:
    """The meter's view of a contract (a cancellation shortens it to its billable end)."""
    end = int(contract.get("billable_end") or contract["end_at"])
    return meter.ContractSpan(contract["id"], contract["model"], contract["devices"], contract["start_at"], end)


class Agent:
    """One node agent; `run()` until `stop()`; every step survives the exchange being away."""

    def __init__(
        self,
        cfg: AgentConfig,
        client: HetexClient,
        source: Source,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.source = source
        self.clock = clock
        self.journal = Journal(cfg.journal, max_bytes=cfg.journal_max_bytes, keep_sent=cfg.keep_sent)
        self.metrics = AgentMetrics()
        self.skew = 0.0
        self.pools: dict[str, dict[str, Any]] = {}
        self.spans: dict[str, meter.ContractSpan] = {}
        self.states: dict[str, meter.MeterState] = {}
        for cid, (state, contract) in self.journal.meters().items():
            self.states[cid] = state
            self.spans[cid] = span_of(contract)
        self.contract_rows: dict[str, dict[str, Any]] = {}
        #: pending contracts the exchange refused to confirm (ended while the node was away): never asked again
        self.unconfirmable: set[str] = set()
        self.scan: Scan | None = None
        self.synced_capacity: dict[str, int] | None = None
        self.backoff_until = 0.0
        self.last_tick: int | None = None  # the previous scan's time: a scan's devices stand for (last_tick, now]
        self.batch_endpoint = cfg.usage_batch != "off"  # cleared when the exchange has no /v1/usage/batch
        self.failures = 0
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------------------------ time

    def now(self) -> int:
        """Local time corrected by the measured skew once it is past the alarm threshold."""
        t = self.clock()
        if abs(self.skew) > self.cfg.skew_alarm_seconds:
            t += self.skew
        return int(t)

    async def measure_skew(self) -> None:
        """Exchange clock (the Date of GET /healthz) minus the local clock at the request's midpoint."""
        t0 = self.clock()
        async with self.client.session.get(self.client.base_url + "/healthz") as resp:
            date = resp.headers.get("Date")
        t1 = self.clock()
        if not date:
            return
        server = parsedate_to_datetime(date).timestamp()
        self.skew = server + 0.5 - (t0 + t1) / 2  # Date has whole seconds: its midpoint
        self.metrics.clock_skew.set(self.skew)
        if abs(self.skew) > self.cfg.skew_alarm_seconds:
            event("clock_skew", logging.WARNING, skew_seconds=round(self.skew, 1), corrected=True)

    # ------------------------------------------------------------------------------------ exchange state

    async def heartbeat(self) -> None:
        """Heartbeat the site; refresh its pools and the contracts on them; confirm when configured."""
        await self.measure_skew()
        beat = await self.client.request("POST", f"/v1/sites/{self.cfg.site}/heartbeat")
        self.metrics.last_heartbeat.set(beat["last_heartbeat_at"])
        site = await self.client.request("GET", f"/v1/sites/{self.cfg.site}", signed=False)
        self.pools = {p["id"]: p for p in site["pools"] if p["status"] == "active"}
        await self.refresh_contracts()

    async def refresh_contracts(self) -> None:
        """The contracts on this site's pools: meters for confirmed ones, confirmation of pending ones."""
        # this site's contracts still running, or ended within the look-back (an outage or a crash may have
        # kept the node away when they ended: their last periods are still to report), not the provider's history
        since = max(0, self.now() - CONTRACT_LOOKBACK_SECONDS)
        params = {"limit": 10_000, "site": self.cfg.site, "ending_after": since}
        listed = await self.client.request("GET", "/v1/contracts", params=params)
        for c in listed["items"]:
            if c["pool_id"] not in self.pools:
                continue
            self.contract_rows[c["id"]] = c
            if c["status"] == "pending" and self.cfg.auto_confirm:
                if c["id"] in self.unconfirmable or c["end_at"] <= self.now():
                    continue  # over before it was confirmed: never started, nothing to meter
                try:
                    c = await self.client.request("POST", f"/v1/contracts/{c['id']}/confirm")
                except RemoteError as exc:  # e.g. it ended while the node was away: skip it, not the others
                    if exc.status >= 500 or exc.status in (401, 429):
                        raise
                    event("confirm_refused", logging.WARNING, contract_id=c["id"], problem=exc.problem)
                    self.unconfirmable.add(c["id"])
                    continue
                event("contract_confirmed", contract_id=c["id"], devices=c["devices"], model=c["model"])
            if c["status"] not in METERED_STATUSES or c["billable_end"] <= c["start_at"]:
                continue
            self.spans[c["id"]] = span_of(c)
            if c["id"] not in self.states:
                self.states[c["id"]] = meter.start(self.spans[c["id"]], self.now())
                event("meter_started", contract_id=c["id"], devices=c["devices"], model=c["model"])

    # ------------------------------------------------------------------------------------ devices

    async def read_devices(self) -> Scan:
        """One scan; a source that fails counts as no devices (nothing sold, nothing metered)."""
        try:
            scan = await self.source.scan()
        except SourceParseError as exc:
            self.metrics.source_errors.inc()
            event("source_error", logging.ERROR, tool=exc.tool, error=exc.message)
            scan = Scan(self.source.name)
        self.metrics.devices.clear()
        for d in scan.devices:
            self.metrics.devices.labels(d.model or "unmapped", "healthy" if d.healthy else "failed").inc()
        if self.scan is not None:
            before, after = self.scan.healthy_by_model(), scan.healthy_by_model()
            if before != after:
                event("devices_changed", logging.WARNING, before=before, after=after)
        for d in scan.unmapped():
            event("device_unmapped", logging.WARNING, uid=d.uid, product=d.product)
        self.scan = scan
        return scan

    async def sync_capacity(self, healthy: dict[str, int]) -> None:
        """Keep each pool's open offers within its healthy devices: reduce or withdraw at once, restore when
        devices come back (the journal remembers the offers as they were)."""
        if not self.cfg.manage_offers or not self.pools:
            return
        listed = await self.client.request("GET", "/v1/offers", params={"status": "open"})
        open_offers = [o for o in listed["offers"] if o["site_cri"] == self.cfg.site]
        reduced = self.journal.reduced()
        left = dict(healthy)
        for pool in sorted(self.pools.values(), key=lambda p: p["cri"]):
            budget = min(pool["devices"], left.get(pool["model"], 0))
            left[pool["model"]] = left.get(pool["model"], 0) - budget
            mine = sorted((o for o in open_offers if o["pool_cri"] == pool["cri"]), key=lambda o: o["id"])
            for offer in mine:
                original = reduced.get(offer["id"], offer)["devices"]
                want = min(original, budget)
                budget -= want
                await self._resize(offer, original, want)
            for old_id, old in reduced.items():  # withdrawn offers come back as new ones
                if old["pool_cri"] != pool["cri"] or any(o["id"] == old_id for o in mine) or budget < 1:
                    continue
                if old.get("window_end") is not None and old["window_end"] <= self.now() + 60:
                    self.journal.forget_reduced(old_id)
                    continue
                want = min(old["devices"], budget)
                budget -= want
                body = {k: old[k] for k in ("pool_cri", "ask_fen", "min_lease_seconds", "billing_modes", "window_end")}
                new = await self.client.request(
                    "POST", "/v1/offers", {**body, "devices": want, "window_start": self.now()}
                )
                self.journal.forget_reduced(old_id)
                if want < old["devices"]:
                    self.journal.remember_reduced({**new, "devices": old["devices"]})
                self.metrics.capacity_changes.inc()
                event("offer_restored", offer_id=new["id"], replaces=old_id, devices=want)
        self.synced_capacity = dict(healthy)

    async def _resize(self, offer: dict[str, Any], original: int, want: int) -> None:
        if want == offer["devices"]:
            if want == original:
                self.journal.forget_reduced(offer["id"])
            return
        self.journal.remember_reduced(offer if original == offer["devices"] else {**offer, "devices": original})
        if want == 0:
            await self.client.request("DELETE", f"/v1/offers/{offer['id']}")
            event("offer_withdrawn", logging.WARNING, offer_id=offer["id"], devices=offer["devices"])
        else:
            await self.client.request(
                "PATCH", f"/v1/offers/{offer['id']}", {"devices": want, "expected_version": offer["version"]}
            )
            event("offer_resized", logging.WARNING, offer_id=offer["id"], before=offer["devices"], after=want)
            if want == original:
                self.journal.forget_reduced(offer["id"])
        self.metrics.capacity_changes.inc()

    # ------------------------------------------------------------------------------------ metering

    def tick(self, scan: Scan) -> int:
        """Accrue every meter to now, close due periods, sign them and journal them (one transaction)."""
        now = self.now()
        healthy = scan.healthy_by_model()
        utils: dict[str, list[int]] = {}
        for d in scan.devices:
            if d.healthy and d.model is not None:
                utils.setdefault(d.model, []).append(d.utilization_pct if d.utilization_pct is not None else 100)
        live = [self.spans[cid] for cid, st in self.states.items() if not st.done and cid in self.spans]
        serving = meter.assign(live, healthy, now, self.last_tick)
        self.last_tick = now
        full = self.journal.full
        self.metrics.journal_full.set(1 if full else 0)
        if full:
            event("journal_full", logging.ERROR, bytes=self.journal.size_bytes(), budget=self.cfg.journal_max_bytes)
        saved: list[tuple[meter.MeterState, dict[str, Any]]] = []
        reports: list[dict[str, Any]] = []
        for span in live:
            st = self.states[span.id]
            vals = utils.get(span.model)
            util = sum(vals) // len(vals) if vals else None
            st = meter.observe(st, span, serving.get(span.id, 0), util, now)
            period = None
            if not full or (st.last_sample_at is not None and st.last_sample_at >= span.end_at):
                st, period = meter.close_due(st, span, self.cfg.period_seconds, now)
            self.states[span.id] = st
            saved.append((st, self._contract_record(span)))
            if period is not None:
                reports.append(self._signed(period))
        if saved:
            self.journal.save(saved, reports)
        for r in reports:
            event(
                "period_closed",
                contract_id=r["contract_id"],
                seq=r["seq"],
                device_minutes=r["device_minutes"],
                availability_bps=r["availability_bps"],
                utilization_pct=r["utilization_pct"],
            )
        return len(reports)

    def _contract_record(self, span: meter.ContractSpan) -> dict[str, Any]:
        return {
            "id": span.id,
            "model": span.model,
            "devices": span.devices,
            "start_at": span.start_at,
            "end_at": span.end_at,
        }

    def _signed(self, p: meter.Period) -> dict[str, Any]:
        fields = {
            "contract_id": p.contract_id,
            "meter_id": self.cfg.meter,
            "seq": p.seq,
            "period_start": p.period_start,
            "period_end": p.period_end,
            "device_minutes": p.device_minutes,
            "availability_bps": p.availability_bps,
        }
        envelope = sign_envelope(USAGE_PAYLOAD_TYPE, usage_payload(**fields), [(self.client.keyid, self.client.key)])
        return {**fields, "utilization_pct": p.utilization_pct, "envelope": envelope}

    # ------------------------------------------------------------------------------------ sending

    async def send_pending(self) -> int:
        """Send journaled reports (per contract in sequence order, contracts side by side); returns accepted."""
        if self.clock() < self.backoff_until:
            return 0
        batch = self.journal.pending(self.cfg.send_batch)
        if batch and self.batch_endpoint:
            outcome = await self._send_batch(batch)
            if outcome is not None:
                sent, failed = outcome
                return self._after_send(sent, failed)
        by_contract: dict[str, list[PendingReport]] = {}
        for r in batch:
            by_contract.setdefault(r.contract_id, []).append(r)
        results = await asyncio.gather(*(self._send_chain(chain) for chain in by_contract.values()))
        return self._after_send(sum(n for n, _ in results), any(failed for _, failed in results))

    def _after_send(self, sent: int, failed: bool) -> int:
        if failed:
            self.failures += 1
            self.backoff_until = self.clock() + min(30.0, 0.5 * 2 ** min(self.failures, 6))
        else:
            self.failures = 0
        depth = self.journal.depth()
        self.metrics.journal_depth.set(depth)
        self.metrics.journal_bytes.set(self.journal.size_bytes())
        return sent

    async def _send_batch(self, batch: list[PendingReport]) -> tuple[int, bool] | None:
        """POST /v1/usage/batch (one signed request, one transaction): (accepted, retry needed), or None
        when the exchange has no batch endpoint (then reports go one per request from now on)."""
        ordered = sorted(batch, key=lambda r: (r.contract_id, r.seq))
        try:
            answer = await self.client.request("POST", "/v1/usage/batch", {"reports": [r.envelope for r in ordered]})
        except NETWORK_ERRORS as exc:
            self.metrics.send_errors.labels("network").inc()
            event("send_failed", logging.WARNING, kind="network", error=type(exc).__name__, reports=len(ordered))
            return 0, True
        except RemoteError as exc:
            if exc.status in (404, 405) and self.cfg.usage_batch == "auto":
                self.batch_endpoint = False
                event("usage_batch_unavailable", status=exc.status)
                return None
            if exc.status == 413:
                return None  # too many at once: this round goes one per request
            self.metrics.send_errors.labels("auth" if exc.status == 401 else "exchange").inc()
            event("send_failed", logging.WARNING, kind="batch", error=exc.message, reports=len(ordered))
            return 0, True
        sent, retry = 0, False
        for item in answer["results"]:
            r = ordered[item["index"]]
            if item["status"] in ("accepted", "duplicate"):
                self.journal.mark_sent(r, {"id": item["id"], "status": item["status"], "flags": item["flags"]})
                self.metrics.reports_sent.inc()
                sent += 1
                if item["flags"]:
                    event("report_flagged", logging.WARNING, contract_id=r.contract_id, seq=r.seq, flags=item["flags"])
                continue
            error = item.get("error") or {}
            if error.get("reason") in RETRY_REASONS:
                self.journal.count_attempt(r)
                retry = True
                continue
            self.journal.mark_refused(r, error)
            self.metrics.reports_refused.inc()
            event("report_refused", logging.ERROR, contract_id=r.contract_id, seq=r.seq, problem=error)
        return sent, retry

    async def _send_chain(self, chain: list[PendingReport]) -> tuple[int, bool]:
        sent = 0
        for r in sorted(chain, key=lambda r: r.seq):
            outcome = await self._send_one(r)
            if outcome == "sent":
                sent += 1
            elif outcome == "retry":
                return sent, True
        return sent, False

    async def _send_one(self, r: PendingReport) -> str:
        """POST one report: sent (201 new, 200 identical earlier), refused for good, or retry later."""
        try:
            answer = await self.client.request("POST", f"/v1/contracts/{r.contract_id}/usage", r.envelope)
        except NETWORK_ERRORS as exc:
            self.journal.count_attempt(r)
            self.metrics.send_errors.labels("network").inc()
            event("send_failed", logging.WARNING, kind="network", error=type(exc).__name__, contract_id=r.contract_id)
            return "retry"
        except RemoteAuthenticationError as exc:
            self.journal.count_attempt(r)
            self.metrics.send_errors.labels("auth").inc()
            event("send_failed", logging.ERROR, kind="auth", error=exc.message, contract_id=r.contract_id)
            return "retry"
        except RemoteError as exc:
            if exc.status >= 500 or exc.reason in RETRY_REASONS or exc.status == 429:
                self.journal.count_attempt(r)
                self.metrics.send_errors.labels("exchange").inc()
                event("send_failed", logging.WARNING, kind="exchange", error=exc.message, contract_id=r.contract_id)
                return "retry"
            self.journal.mark_refused(r, exc.problem)
            self.metrics.reports_refused.inc()
            event("report_refused", logging.ERROR, contract_id=r.contract_id, seq=r.seq, problem=exc.problem)
            return "refused"
        self.journal.mark_sent(r, {"id": answer["id"], "status": answer["status"], "flags": answer["flags"]})
        self.metrics.reports_sent.inc()
        if answer["flags"]:
            event("report_flagged", logging.WARNING, contract_id=r.contract_id, seq=r.seq, flags=answer["flags"])
        return "sent"

    # ------------------------------------------------------------------------------------ loop

    def stop(self) -> None:
        """Ask run() to return after the current step."""
        self._stop.set()

    async def step(self, *, heartbeat: bool) -> None:
        """One round of the loop (heartbeat and exchange refresh when due)."""
        scan = await self.read_devices()
        healthy = scan.healthy_by_model()
        if heartbeat:
            try:
                await self.heartbeat()
            except (*NETWORK_ERRORS, RemoteError) as exc:
                event("heartbeat_failed", logging.WARNING, error=str(exc) or type(exc).__name__)
        if heartbeat or healthy != self.synced_capacity:
            try:
                await self.sync_capacity(healthy)
            except (*NETWORK_ERRORS, RemoteError) as exc:
                self.synced_capacity = None
                event("capacity_sync_failed", logging.WARNING, error=str(exc) or type(exc).__name__)
        self.tick(scan)
        await self.send_pending()

    async def run(self) -> None:
        """Loop until stop(): scan every scan_seconds, heartbeat every heartbeat_seconds, send as able."""
        runner = None
        if self.cfg.metrics_port:
            runner = await self.metrics.serve(self.cfg.metrics_host, self.cfg.metrics_port)
        event(
            "agent_started",
            site=self.cfg.site,
            source=self.source.name,
            meter_id=self.cfg.meter,
            pending=self.journal.depth(),
        )
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                t = time.monotonic()
                beat = t >= next_beat
                if beat:
                    next_beat = t + self.cfg.heartbeat_seconds
                await self.step(heartbeat=beat)
                if self.journal.prune():
                    event("journal_pruned", kept=self.cfg.keep_sent)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.cfg.scan_seconds)
        finally:
            if runner is not None:
                await runner.cleanup()
            event("agent_stopped", pending=self.journal.depth())

    def status(self) -> dict[str, Any]:
        """What the journal holds: pending depth, bytes, per-contract totals."""
        return {
            "site": self.cfg.site,
            "meter_id": self.cfg.meter,
            "journal": str(self.cfg.journal),
            "pending": self.journal.depth(),
            "bytes": self.journal.size_bytes(),
            "full": self.journal.full,
            "contracts": self.journal.totals(),
        }
