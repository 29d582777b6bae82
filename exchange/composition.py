"""The one composition root: builds every service from settings; the app and the CLI call it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.billing.tiers import load_tier_table
from exchange.services.audit import AuditService
from exchange.services.contracts import ContractService
from exchange.services.federation import Federation
from exchange.services.health import HealthService
from exchange.services.hub import HubService
from exchange.services.identity import IdentityService
from exchange.services.lease import SingletonLease
from exchange.services.ledger import LedgerService
from exchange.services.nonces import NonceStore
from exchange.services.orders import OrderService
from exchange.services.participants import ParticipantService
from exchange.services.registration import RegistrationService
from exchange.services.resolve import ResolveService
from exchange.services.round_lock import RoundLock
from exchange.services.round_worker import RoundWorker
from exchange.services.rounds import RoundService
from exchange.services.settlement import SettlementService
from exchange.services.usage import UsageService
from exchange.settings import Settings
from exchange.storage.engine import make_engine, make_read_engine, make_sessionmaker
from identifiers.catalogue import Catalogue, load_catalogue
from identifiers.regions import RegionTable, load_regions


@dataclass
class Services:
    """Every service of one exchange process, wired to one database."""

    settings: Settings
    engine: AsyncEngine | None
    sessions: async_sessionmaker[AsyncSession]
    catalogue: Catalogue
    regions: RegionTable
    resolve: ResolveService
    health: HealthService
    identity: IdentityService
    ledger: LedgerService
    federation: Federation
    hub: HubService
    audit: AuditService
    participants: ParticipantService
    registration: RegistrationService
    orders: OrderService
    contracts: ContractService
    usage: UsageService
    settlement: SettlementService
    rounds: RoundService
    lease: SingletonLease
    read_engine: AsyncEngine | None = None  # SQLite: the rounds' read-only connection (make_read_engine)

    async def close(self) -> None:
        """Stop background audit jobs and the round worker; release the database pools (only when this root
        opened them)."""
        await self.audit.close()
        if self.rounds.worker is not None:
            await self.rounds.worker.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self.read_engine is not None:
            await self.read_engine.dispose()


async def build_services(
    settings: Settings, *, sessions: async_sessionmaker[AsyncSession] | None = None, serving: bool = False
) -> Services:
    """Wire services for `settings`; tests pass `sessions` bound to a rolled-back transaction. `serving`
    (`hetex serve` and the benches that stand for it): rounds run in a child process when the settings say
    so (settings.rounds_in_child, exchange/services/round_worker.py)."""
    engine = read_engine = None
    if sessions is None:
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        read_engine = make_read_engine(settings.database_url)
    read_sessions = sessions if read_engine is None else make_sessionmaker(read_engine)
    catalogue = load_catalogue()
    regions = load_regions()
    nonces = NonceStore(settings.signature_window_seconds)
    identity = IdentityService(sessions, settings.key_dir, settings.origin)
    ledger = LedgerService(sessions, identity, settings.origin)
    federation = Federation.build(sessions, settings, identity, ledger, catalogue=catalogue)
    usage = UsageService(sessions, ledger, nonces=nonces)
    settlement = SettlementService(sessions, ledger, load_tier_table)
    usage.on_logged = settlement.on_logged = federation.mirror.enqueue_mirror  # cross-exchange contracts are mirrored
    usage.before_logged = federation.mirror.prepare_mirror  # its lookup made before the log lock
    contracts = ContractService(sessions, ledger, catalogue, load_tier_table, fee_bps=settings.fee_bps)
    rounds = RoundService(
        sessions,
        RoundLock(sessions.kw["bind"], settings.database_url),
        contracts,
        catalogue,
        regions,
        fee_bps=settings.fee_bps,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        slot_seconds=settings.round_slot_seconds,
        max_start_slots=settings.round_max_start_slots,
        repeatable_snapshot=engine is not None and not settings.is_sqlite,
        disclosure_min_orders=settings.disclosure_min_orders,
        read_sessions=read_sessions,
        worker=RoundWorker(settings) if serving and engine is not None and settings.rounds_in_child else None,
    )
    federation.inbound.seller_lock = lambda: rounds.lock.hold(settings.federation_peer_timeout_seconds)
    hub = HubService(sessions, settings, federation, catalogue, regions)
    hub.local_round = lambda routed: rounds.run_round("hub", routed=routed)
    if settings.federation_hub_mode:
        federation.inbound.reroute = hub.reroute
    return Services(
        settings=settings,
        engine=engine,
        read_engine=read_engine,
        sessions=sessions,
        catalogue=catalogue,
        regions=regions,
        resolve=ResolveService(sessions, settings.authority),
        health=HealthService(sessions, settings.authority),
        identity=identity,
        ledger=ledger,
        federation=federation,
        hub=hub,
        audit=AuditService(
            sessions,
            ledger,
            identity,
            catalogue,
            settings.exports_dir,
            settings.authority,
            job_lease_seconds=settings.job_lease_seconds,
        ),
        participants=ParticipantService(sessions, regions, settings.signature_window_seconds, nonces),
        registration=RegistrationService(
            sessions, catalogue, regions, settings.authority, settings.heartbeat_timeout_seconds
        ),
        orders=OrderService(sessions, catalogue, regions, nonces=nonces),
        contracts=contracts,
        usage=usage,
        settlement=settlement,
        rounds=rounds,
        lease=SingletonLease(
            sessions.kw["bind"],
            sessions,
            settings.database_url,
            poll_seconds=settings.lease_poll_seconds,
            stop_grace_seconds=settings.shutdown_grace_seconds,
        ),
    )
