"""Read models of the web console: public market aggregates and each party's own rows.

Reads only; the pages (exchange/web) call these and the existing services, never SQL. Public figures are
aggregates (prices per region x family, devices per model and region, round statistics): no order's limit
price, no participant's name, no contract's parties.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.principals import Principal
from exchange.storage.audit import AuditExport
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.participants import Participant
from exchange.storage.registration import Offer, Pool, Site
from exchange.storage.rounds import Round, RoundPrice
from exchange.storage.settlement import SettlementRecord, UsageReport
from identifiers.catalogue import Catalogue
from identifiers.regions import RegionTable

HOUR = Decimal(3600)
DAY = 86_400
LIVE_CONTRACTS = ("pending", "confirmed", "completed")


def heartbeat_status(last: int | None, now: int, timeout: int) -> str:
    """live (offers matchable), late (missed the window by up to two more), silent (longer, or never)."""
    if last is None:
        return "silent"
    age = now - last
    if age <= timeout:
        return "live"
    return "late" if age <= 3 * timeout else "silent"


@dataclass(frozen=True)
class QuoteLine:
    """One pool that could serve a draft order, at its ask (the indicative price floor)."""

    region: str
    model: str
    family: str
    free_devices: int
    ask_fen: int
    total_fen: int


class ConsoleService:
    """Aggregates for the console pages."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalogue: Catalogue,
        regions: RegionTable,
        heartbeat_timeout_seconds: int,
    ) -> None:
        self.sessions = sessions
        self.catalogue = catalogue
        self.regions = regions
        self.heartbeat_timeout = heartbeat_timeout_seconds

    # ------------------------------------------------------------------------------------ public

    async def price_history(self, rounds: int = 100) -> dict[str, list[tuple[int, Decimal]]]:
        """Per family: (cleared_at, lowest posted single-device price) for each of the last `rounds` rounds."""
        recent = (
            select(RoundPrice.round_id)
            .group_by(RoundPrice.round_id)
            .order_by(func.max(RoundPrice.cleared_at).desc())
            .limit(rounds)
            .subquery()
        )
        q = (
            select(RoundPrice.family, RoundPrice.round_id, func.max(RoundPrice.cleared_at), RoundPrice.buyer_price)
            .where(RoundPrice.round_id.in_(select(recent.c.round_id)))
            .group_by(RoundPrice.family, RoundPrice.round_id, RoundPrice.buyer_price)
        )
        best: dict[tuple[str, str], tuple[int, Decimal]] = {}
        async with self.sessions() as session:
            for family, round_id, at, price in await session.execute(q):
                value = Decimal(price)
                cur = best.get((family, round_id))
                if cur is None or value < cur[1]:
                    best[(family, round_id)] = (int(at), value)
        out: dict[str, list[tuple[int, Decimal]]] = defaultdict(list)
        for (family, _), point in best.items():
            out[family].append(point)
        return {f: sorted(points) for f, points in sorted(out.items())}

    async def audit_results(self, round_ids: list[str]) -> dict[str, bool | None]:
        """Whether each round's audit passed (None: no audit, e.g. a failed round)."""
        if not round_ids:
            return {}
        async with self.sessions() as session:
            rows = await session.execute(select(Round.id, Round.audit).where(Round.id.in_(round_ids)))
            return {rid: (audit or {}).get("ok") for rid, audit in rows}

    async def capacity_by_region(self) -> dict[str, dict[str, int]]:
        """Per region: active sites, active pools and their devices (registered capacity, live or not)."""
        q = (
            select(Site.region, func.count(func.distinct(Site.id)), func.count(Pool.id), func.sum(Pool.devices))
            .join(Pool, Pool.site_id == Site.id)
            .where(Site.status == "active", Pool.status == "active")
            .group_by(Site.region)
        )
        async with self.sessions() as session:
            rows = (await session.execute(q)).all()
        return {r: {"sites": int(s), "pools": int(p), "devices": int(d or 0)} for r, s, p, d in rows}

    # ------------------------------------------------------------------------------------ provider

    async def provider_sites(self, who: Principal) -> list[dict[str, Any]]:
        """The provider's sites with heartbeat status, and their pools."""
        now = now_s()
        async with self.sessions() as session:
            sites = list(
                (
                    await session.execute(
                        select(Site).where(Site.provider_id == who.id).order_by(Site.created_at, Site.id)
                    )
                ).scalars()
            )
            pools = list(
                (
                    await session.execute(
                        select(Pool)
                        .join(Site, Site.id == Pool.site_id)
                        .where(Site.provider_id == who.id)
                        .order_by(Pool.created_at, Pool.id)
                    )
                ).scalars()
            )
        by_site: dict[str, list[Pool]] = defaultdict(list)
        for p in pools:
            by_site[p.site_id].append(p)
        return [
            {
                "cri": s.cri,
                "name": s.name,
                "region": s.region,
                "status": s.status,
                "last_heartbeat_at": s.last_heartbeat_at,
                "heartbeat": heartbeat_status(s.last_heartbeat_at, now, self.heartbeat_timeout)
                if s.status == "active"
                else "deregistered",
                "pools": [
                    {"cri": p.cri, "model": p.model, "devices": p.devices, "status": p.status} for p in by_site[s.id]
                ],
            }
            for s in sites
        ]

    async def usage_counts(self, contract_ids: list[str]) -> dict[str, int]:
        """Usage reports per contract (for the contracts the caller already may read)."""
        if not contract_ids:
            return {}
        q = (
            select(UsageReport.contract_id, func.count())
            .where(UsageReport.contract_id.in_(contract_ids))
            .group_by(UsageReport.contract_id)
        )
        async with self.sessions() as session:
            return {cid: int(n) for cid, n in await session.execute(q)}

    async def utilization(self, who: Principal, days: int = 14) -> list[dict[str, Any]]:
        """Per day (UTC) of the last `days`: device-hours contracted on the provider's pools vs offered."""
        now = now_s()
        start = (now // DAY - days + 1) * DAY
        async with self.sessions() as session:
            contracts = list(
                (
                    await session.execute(
                        select(Contract).where(
                            Contract.provider_id == who.id,
                            Contract.status.in_(LIVE_CONTRACTS),
                            Contract.end_at > start,
                        )
                    )
                ).scalars()
            )
            offered = int(
                await session.scalar(
                    select(func.coalesce(func.sum(Offer.devices), 0)).where(
                        Offer.provider_id == who.id, Offer.status == "open"
                    )
                )
                or 0
            )
        out = []
        for d in range(days):
            lo, hi = start + d * DAY, start + (d + 1) * DAY
            used = sum(
                Decimal(c.devices) * Decimal(max(0, min(hi, c.end_at) - max(lo, c.start_at))) / HOUR for c in contracts
            )
            out.append({"day": lo, "used_device_hours": used, "offered_device_hours": Decimal(offered * 24)})
        return out

    # ------------------------------------------------------------------------------------ money

    async def settled_by_mode(self, who: Principal) -> dict[str, dict[str, int]]:
        """Per billing mode, the current (not superseded) settled amounts of the caller's contracts, in fen:
        debit for a buyer, credit for a provider, all for the operator and regulators."""
        q = select(SettlementRecord, Contract.buyer_id, Contract.provider_id).join(
            Contract, Contract.id == SettlementRecord.contract_id
        )
        if who.role == "buyer":
            q = q.where(Contract.buyer_id == who.id)
        elif who.role == "provider":
            q = q.where(Contract.provider_id == who.id)
        async with self.sessions() as session:
            rows = (await session.execute(q)).all()
        superseded = {r.supersedes_id for r, _, _ in rows if r.supersedes_id}
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"debit_fen": 0, "credit_fen": 0, "fee_fen": 0})
        for r, _, _ in rows:
            if r.id in superseded:
                continue
            mode = out[r.billing_mode]
            mode["debit_fen"] += r.buyer_debit_fen
            mode["credit_fen"] += r.provider_credit_fen
            mode["fee_fen"] += r.fee_fen
        return dict(sorted(out.items()))

    # ------------------------------------------------------------------------------------ regulator

    async def flows(self) -> dict[str, Any]:
        """Contracted flows buyer home region x provider region (yuan value and SCU-hours), domestic share per
        day, and contract value per billing mode; cancelled contracts excluded. The database sums integer
        device-seconds and fen x device-seconds per group; Decimal turns them into hours and fen here."""
        device_seconds = Contract.devices * (Contract.end_at - Contract.start_at)
        day = Contract.start_at - Contract.start_at % DAY
        q = (
            select(
                Participant.home_region,
                Contract.region,
                Contract.model,
                Contract.billing_mode,
                day,
                func.count(),
                func.sum(device_seconds),
                func.sum(Contract.buyer_price_fen * device_seconds),
            )
            .join(Participant, Participant.id == Contract.buyer_id)
            .where(Contract.status.in_(LIVE_CONTRACTS))
            .group_by(Participant.home_region, Contract.region, Contract.model, Contract.billing_mode, day)
        )
        async with self.sessions() as session:
            rows = (await session.execute(q)).all()
        cells: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
            lambda: {"fen": Decimal(0), "scu_hours": Decimal(0)}
        )
        daily: dict[int, dict[str, Decimal]] = defaultdict(lambda: {"domestic": Decimal(0), "imported": Decimal(0)})
        modes: dict[str, dict[str, Decimal]] = defaultdict(lambda: {"contracts": Decimal(0), "fen": Decimal(0)})
        for home, region, code, mode, start_day, count, secs, fen_secs in rows:
            model = self.catalogue.get(code) if code in self.catalogue else None
            scu = model.scu if model is not None and model.scu is not None else Decimal(0)
            hours = Decimal(int(secs or 0)) / HOUR
            value = Decimal(int(fen_secs or 0)) / HOUR
            cell = cells[(home or "-", region)]
            cell["fen"] += value
            cell["scu_hours"] += scu * hours
            side = "domestic" if model is not None and model.domestic else "imported"
            daily[int(start_day)][side] += hours
            modes[mode]["contracts"] += count
            modes[mode]["fen"] += value
        return {
            "cells": dict(sorted(cells.items())),
            "homes": sorted({h for h, _ in cells}),
            "regions": sorted({r for _, r in cells}),
            "daily": dict(sorted(daily.items())),
            "modes": dict(sorted(modes.items())),
        }

    async def exports_of(self, who: Principal, limit: int = 50) -> list[dict[str, Any]]:
        """The regulator's audit export jobs, newest first, with progress."""
        q = (
            select(AuditExport)
            .where(AuditExport.regulator_id == who.id)
            .order_by(AuditExport.created_at.desc(), AuditExport.id.desc())
            .limit(limit)
        )
        async with self.sessions() as session:
            rows = (await session.execute(q)).scalars().all()
        out = []
        for r in rows:
            total = r.records_total or 0
            percent = 100 if r.status == "done" else (math.floor(100 * r.records_done / total) if total else 0)
            out.append(
                {
                    "id": r.id,
                    "status": r.status,
                    "period_from": r.period_from,
                    "period_to": r.period_to,
                    "region": r.region,
                    "operator": r.operator,
                    "records_exported": r.records_exported,
                    "percent": percent,
                    "bundle_sha256": r.bundle_sha256,
                    "bundle_bytes": r.bundle_bytes,
                    "error": r.error,
                    "created_at": r.created_at,
                }
            )
        return out
