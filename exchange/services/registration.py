"""Provider node registration: sites (-> site CRIs), pools (-> pool CRIs), offers, heartbeats, tombstones,
and the live-offer snapshot the clearing round reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.fields import (
    REQUEST_MODEL,
    DeviceCount,
    EpochSeconds,
    Name,
    PositiveFen,
    RegionCode,
    Seconds,
    ShortText,
    ascii_decimal,
    decimal_schema,
)
from exchange.services.heartbeats import HeartbeatWriter
from exchange.services.principals import Principal, SignedRequest
from exchange.services.records import add_record
from exchange.services.resolve import pool_view, site_view
from exchange.storage.registration import Offer, Pool, Site
from identifiers.catalogue import Catalogue
from identifiers.cri import Cri, mint_pool_cri, mint_site_cri, parse_cri
from identifiers.errors import ConflictError, GoneError, NotFoundError, ValidationError
from identifiers.ids import new_id_str
from identifiers.regions import RegionTable

BillingMode = Literal["per_minute", "compute_tier", "subscription", "project"]
BILLING_MODES: tuple[str, ...] = ("per_minute", "compute_tier", "subscription", "project")


class UnknownSiteError(NotFoundError):
    """No site has this CRI."""

    code = "unknown_site"


class UnknownPoolError(NotFoundError):
    """No pool has this CRI."""

    code = "unknown_pool"


class UnknownOfferError(NotFoundError):
    """No offer has this id."""

    code = "unknown_offer"


class TombstonedError(ConflictError):
    """The site or pool was deregistered; its CRI stays as a tombstone and cannot change."""

    code = "tombstoned"


class OfferWithdrawnError(GoneError):
    """GET of a withdrawn offer: it is no longer served as a resource (410); its history stays readable in
    the provider's offer list (`?status=withdrawn`) and its fills (`GET /v1/offers/{id}/fills`)."""

    code = "offer_withdrawn"


class OfferClosedError(ConflictError):
    """The offer is no longer open (withdrawn) and cannot be amended or withdrawn again."""

    code = "offer_closed"


class OfferVersionError(ConflictError):
    """The amendment named an expected version that is not the offer's current version."""

    code = "offer_version_mismatch"


class PoolOvercommittedError(ConflictError):
    """Open offers overlapping in time would offer more devices than the pool has."""

    code = "pool_overcommitted"


# --------------------------------------------------------------------------------------------- models


class SiteRegistration(BaseModel):
    """Body of POST /v1/sites: a data-centre node."""

    model_config = REQUEST_MODEL

    region: RegionCode
    name: Name
    pue: Annotated[Decimal, ascii_decimal(1, 3, "1.25"), decimal_schema(1, 3, "1.25"), Field(ge=1, le=5)] | None = None
    green_share: (
        Annotated[Decimal, ascii_decimal(1, 4, "0.4"), decimal_schema(1, 4, "0.4"), Field(ge=0, le=1)] | None
    ) = None
    interconnect: ShortText | None = None


class PoolDeclaration(BaseModel):
    """Body of POST /v1/sites/{cri}/pools: identical accelerators at one site."""

    model_config = REQUEST_MODEL

    model: Annotated[str, Field(min_length=2, max_length=24, pattern=r"^[A-Z]{2,4}(-[A-Z0-9]{1,10}){1,3}$")]
    devices: DeviceCount
    memory_gb: Annotated[StrictInt, Field(ge=1, le=65536)] | None = None
    intra_node_link: ShortText | None = None
    nodes: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    devices_per_node: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> PoolDeclaration:
        nodes, per = self.nodes, self.devices_per_node
        if nodes is None and per is None:
            nodes, per = 1, self.devices
        elif nodes is None:
            assert per is not None
            if self.devices % per:
                raise ValueError("devices must be a multiple of devices_per_node")
            nodes = self.devices // per
        elif per is None:
            if self.devices % nodes:
                raise ValueError("devices must be a multiple of nodes")
            per = self.devices // nodes
        if nodes * per != self.devices:
            raise ValueError("devices must equal nodes * devices_per_node")
        self.nodes, self.devices_per_node = nodes, per
        return self


def _default_modes() -> list[BillingMode]:
    return ["per_minute"]


BillingModes = Annotated[list[BillingMode], Field(min_length=1, max_length=4)]


class OfferPost(BaseModel):
    """Body of POST /v1/offers: capacity from one pool."""

    model_config = REQUEST_MODEL

    pool_cri: Annotated[str, Field(min_length=1, max_length=100)]
    devices: DeviceCount
    window_start: EpochSeconds
    window_end: EpochSeconds | None = None
    min_lease_seconds: Seconds = 3600
    ask_fen: PositiveFen = Field(description="ask price in fen per device-hour")
    billing_modes: BillingModes = Field(default_factory=_default_modes)

    @model_validator(mode="after")
    def _check(self) -> OfferPost:
        _check_window(self.window_start, self.window_end)
        _check_modes(self.billing_modes)
        return self


class OfferAmendment(BaseModel):
    """Body of PATCH /v1/offers/{id}: the fields to change (at least one)."""

    model_config = REQUEST_MODEL

    devices: DeviceCount | None = None
    window_start: EpochSeconds | None = None
    window_end: EpochSeconds | None = None
    min_lease_seconds: Seconds | None = None
    ask_fen: PositiveFen | None = None
    billing_modes: BillingModes | None = None
    expected_version: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None

    @model_validator(mode="after")
    def _check(self) -> OfferAmendment:
        changes = self.model_dump(exclude_unset=True, exclude={"expected_version"})
        if not changes:
            raise ValueError("an amendment changes at least one field")
        for name in ("devices", "window_start", "min_lease_seconds", "ask_fen", "billing_modes"):
            if name in changes and changes[name] is None:
                raise ValueError(f"{name} cannot be null")
        if self.billing_modes is not None:
            _check_modes(self.billing_modes)
        return self


def _check_window(start: int, end: int | None) -> None:
    if end is not None and end <= start:
        raise ValueError("window_end must be after window_start")


def _check_modes(modes: Sequence[str]) -> None:
    if len(set(modes)) != len(modes):
        raise ValueError("billing_modes must not repeat")


class SiteView(BaseModel):
    """A site as the API shows it (also its tombstone)."""

    kind: Literal["site"]
    cri: str
    id: str
    provider_id: str
    region: str
    name: str
    pue: str | None
    green_share: str | None
    interconnect: str | None
    status: Literal["active", "tombstoned"]
    last_heartbeat_at: int | None
    tombstoned_at: int | None
    created_at: int


class PoolView(BaseModel):
    """A pool as the API shows it (also its tombstone)."""

    kind: Literal["pool"]
    cri: str
    id: str
    site_cri: str
    provider_id: str
    region: str
    model: str
    devices: int
    memory_gb: int
    intra_node_link: str | None
    nodes: int
    devices_per_node: int
    status: Literal["active", "tombstoned"]
    tombstoned_at: int | None
    created_at: int


class SiteDetail(SiteView):
    """A site with its pools."""

    pools: list[PoolView]


class SiteList(BaseModel):
    """The caller's sites with their pools."""

    sites: list[SiteDetail]


class HeartbeatView(BaseModel):
    """Answer to a heartbeat."""

    cri: str
    last_heartbeat_at: int
    live_until: int


class OfferView(BaseModel):
    """An offer as the API shows it."""

    id: str
    pool_cri: str
    site_cri: str
    provider_id: str
    model: str
    region: str
    devices: int
    window_start: int
    window_end: int | None
    min_lease_seconds: int
    ask_fen: int
    billing_modes: list[BillingMode]
    status: Literal["open", "withdrawn"]
    version: int
    created_at: int
    updated_at: int | None


class OfferList(BaseModel):
    """The caller's offers."""

    offers: list[OfferView]


def live_offers_query(now: int, *, heard_since: int) -> Select[Offer, Pool, Site]:
    """Open offers of active pools at active sites heard from since `heard_since`, whose window has not
    ended at `now` (the one definition of "live" that registration views and clearing rounds share)."""
    return (
        select(Offer, Pool, Site)
        .join(Pool, Offer.pool_id == Pool.id)
        .join(Site, Pool.site_id == Site.id)
        .where(
            Offer.status == "open",
            Pool.status == "active",
            Site.status == "active",
            Site.last_heartbeat_at >= heard_since,
            or_(Offer.window_end.is_(None), Offer.window_end > now),
        )
        .order_by(Offer.id)
    )


@dataclass(frozen=True)
class LiveOffer:
    """One matchable offer with what clearing needs about its pool, site and accelerator model."""

    offer_id: str
    offer_version: int
    provider_id: str
    pool_id: str
    pool_cri: str
    site_id: str
    site_cri: str
    region: str
    model: str
    vendor: str
    family: str
    software_stack: str | None
    domestic: bool
    memory_gb: int
    fp16_dense_tflops: Decimal | None
    scu: Decimal | None
    devices: int
    pool_devices: int
    nodes: int
    devices_per_node: int
    window_start: int
    window_end: int | None
    min_lease_seconds: int
    ask_fen: int
    billing_modes: tuple[str, ...]
    last_heartbeat_at: int


def offer_view(offer: Offer, pool: Pool, site: Site) -> OfferView:
    """API form of an offer."""
    return OfferView(
        id=offer.id,
        pool_cri=pool.cri,
        site_cri=site.cri,
        provider_id=offer.provider_id,
        model=pool.model,
        region=site.region,
        devices=offer.devices,
        window_start=offer.window_start,
        window_end=offer.window_end,
        min_lease_seconds=offer.min_lease_seconds,
        ask_fen=offer.ask_fen,
        billing_modes=offer.billing_modes,  # type: ignore[arg-type]
        status=offer.status,  # type: ignore[arg-type]
        version=offer.version,
        created_at=offer.created_at,
        updated_at=offer.updated_at,
    )


def _now() -> int:
    return int(time.time())


def _check_not_ended(window_end: int | None, now: int) -> None:
    """Refuse an offer window that has already ended (nothing could ever be sold from it)."""
    if window_end is not None and window_end <= now:
        raise ValidationError(f"window_end: {window_end} has already passed (now {now})", field="window_end", now=now)


def _overlaps(s1: int, e1: int | None, s2: int, e2: int | None) -> bool:
    return (e2 is None or s1 < e2) and (e1 is None or s2 < e1)


# --------------------------------------------------------------------------------------------- service


@dataclass
class RegistrationService:
    """Sites, pools and offers of providers; every change stored with its signed request."""

    sessions: async_sessionmaker[AsyncSession]
    catalogue: Catalogue
    regions: RegionTable
    authority: str
    heartbeat_timeout_seconds: int = 900
    #: the service clock: offer windows that already ended are refused against it
    clock: Callable[[], int] = _now
    #: writes heartbeats (grouped on PostgreSQL, exchange.services.heartbeats)
    heartbeats: HeartbeatWriter = field(init=False)

    def __post_init__(self) -> None:
        self.heartbeats = HeartbeatWriter(self.sessions)

    # sites -----------------------------------------------------------------------------------------

    async def register_site(self, who: Principal, body: SiteRegistration, signed: SignedRequest) -> SiteView:
        """Register a data-centre node and mint its site CRI under the provider's operator code."""
        who.require_role("provider", action="register sites")
        if body.region not in self.regions.codes:
            raise ValidationError(f"region: {body.region!r} is not a region served here", field="region")
        assert who.operator_code is not None
        now = _now()
        async with self.sessions.begin() as session:
            cri = await self._fresh_cri(session, lambda: mint_site_cri(self.authority, body.region, who.operator_code))
            site = Site(
                id=new_id_str(),
                cri=str(cri),
                provider_id=who.id,
                region=body.region,
                site_code=cri.site,
                name=body.name,
                pue=body.pue,
                green_share=body.green_share,
                interconnect=body.interconnect,
                status="active",
                last_heartbeat_at=now,
                created_at=now,
            )
            session.add(site)
            await session.flush()
            add_record(session, who.id, "site.register", site.cri, signed)
        return SiteView(**site_view(site))

    async def _fresh_cri(self, session: AsyncSession, mint: object) -> Cri:
        assert callable(mint)
        for _ in range(20):
            cri: Cri = mint()
            text = str(cri)
            site_taken = await session.execute(select(Site.id).where(Site.cri == text))
            pool_taken = await session.execute(select(Pool.id).where(Pool.cri == text))
            if site_taken.first() is None and pool_taken.first() is None:
                return cri
        raise ConflictError("could not mint a free CRI; retry")  # pragma: no cover

    async def _site(self, session: AsyncSession, cri_text: str, *, lock: bool = False) -> Site:
        cri = parse_cri(cri_text)
        if cri.kind != "site":
            raise ValidationError("cri: expected a site CRI, got a pool CRI", field="cri")
        query = select(Site).where(Site.cri == str(cri))
        if lock:
            query = query.with_for_update()
        site = (await session.execute(query)).scalar_one_or_none()
        if site is None:
            raise UnknownSiteError(f"no site {cri}", field="cri")
        return site

    async def get_site(self, cri_text: str) -> SiteDetail:
        """A site (or its tombstone) with its pools; public like /v1/resolve."""
        async with self.sessions() as session:
            site = await self._site(session, cri_text)
            pools = (await session.execute(select(Pool).where(Pool.site_id == site.id).order_by(Pool.id))).scalars()
            return SiteDetail(**site_view(site), pools=[PoolView(**pool_view(p, site)) for p in pools])

    async def list_sites(self, who: Principal, status: str | None = None) -> SiteList:
        """The caller's sites (oldest first) with their pools; `status` filters sites."""
        who.require_role("provider", action="list sites")
        query = select(Site).where(Site.provider_id == who.id).order_by(Site.created_at, Site.id)
        if status is not None:
            query = query.where(Site.status == status)
        async with self.sessions() as session:
            sites = list((await session.execute(query)).scalars())
            ids = [s.id for s in sites]
            pools: list[Pool] = []
            if ids:
                pools = list(
                    (await session.execute(select(Pool).where(Pool.site_id.in_(ids)).order_by(Pool.id))).scalars()
                )
            by_site: dict[str, list[Pool]] = {}
            for pool in pools:
                by_site.setdefault(pool.site_id, []).append(pool)
        return SiteList(
            sites=[
                SiteDetail(**site_view(s), pools=[PoolView(**pool_view(p, s)) for p in by_site.get(s.id, [])])
                for s in sites
            ]
        )

    async def heartbeat(self, who: Principal, cri_text: str, created: int | None = None) -> HeartbeatView:
        """Mark the site alive at the heartbeat's signed `created` time (never later than now); its offers stay
        matchable for heartbeat_timeout_seconds from then.

        The fleet's most frequent request, so one statement and no nonce (specs/capacity.md 3, specs/signing.md 7):
        an UPDATE of the caller's active site that only moves last_heartbeat_at forward. A replay inside the
        signature window carries the same `created`, so it matches no row and changes nothing; it is answered
        like any heartbeat that arrives after a newer one, with the site's stored liveness. Only when the UPDATE
        changes nothing does a read say why (unknown site, another provider's, deregistered, or already newer)."""
        who.require_role("provider", action="send heartbeats")
        cri = parse_cri(cri_text)
        if cri.kind != "site":
            raise ValidationError("cri: expected a site CRI, got a pool CRI", field="cri")
        now = _now()
        beat = now if created is None else min(created, now)
        if not await self.heartbeats.beat(str(cri), who.id, beat):
            async with self.sessions() as session:
                site = await self._site(session, cri_text)
            who.require_owner(site.provider_id, f"site {site.cri}")
            if site.status != "active":
                raise TombstonedError(f"site {site.cri} is deregistered", field="cri")
            beat = site.last_heartbeat_at or beat  # a newer heartbeat (or this one) is already stored
        return HeartbeatView(cri=str(cri), last_heartbeat_at=beat, live_until=beat + self.heartbeat_timeout_seconds)

    async def deregister_site(self, who: Principal, cri_text: str, signed: SignedRequest) -> SiteView:
        """Tombstone the site and its pools and withdraw their open offers (the CRIs are never reused)."""
        who.require_role("provider", action="deregister sites")
        now = _now()
        async with self.sessions.begin() as session:
            site = await self._site(session, cri_text, lock=True)
            who.require_owner(site.provider_id, f"site {site.cri}")
            if site.status != "active":
                raise TombstonedError(f"site {site.cri} is already deregistered", field="cri")
            site.status, site.tombstoned_at = "tombstoned", now
            pool_ids = select(Pool.id).where(Pool.site_id == site.id).scalar_subquery()
            await session.execute(
                update(Offer)
                .where(Offer.pool_id.in_(pool_ids), Offer.status == "open")
                .values(status="withdrawn", updated_at=now)
            )
            await session.execute(
                update(Pool)
                .where(Pool.site_id == site.id, Pool.status == "active")
                .values(status="tombstoned", tombstoned_at=now)
            )
            add_record(session, who.id, "site.deregister", site.cri, signed)
        return SiteView(**site_view(site))

    # pools -----------------------------------------------------------------------------------------

    async def declare_pool(
        self, who: Principal, site_cri: str, body: PoolDeclaration, signed: SignedRequest
    ) -> PoolView:
        """Declare a pool at one of the provider's sites and mint its pool CRI."""
        who.require_role("provider", action="declare pools")
        if body.model not in self.catalogue:
            raise ValidationError(f"model: {body.model!r} is not in the accelerator catalogue", field="model")
        memory_gb = body.memory_gb
        if memory_gb is None:
            known = self.catalogue.get(body.model).memory_gb
            if known is None:
                raise ValidationError(
                    f"memory_gb: the catalogue has no memory figure for {body.model}; give memory_gb", field="memory_gb"
                )
            memory_gb = int(known)
        assert body.nodes is not None and body.devices_per_node is not None
        async with self.sessions.begin() as session:
            site = await self._site(session, site_cri)
            who.require_owner(site.provider_id, f"site {site.cri}")
            if site.status != "active":
                raise TombstonedError(f"site {site.cri} is deregistered", field="cri")
            site_cri_obj = parse_cri(site.cri)
            cri = await self._fresh_cri(session, lambda: mint_pool_cri(site_cri_obj, body.model))
            pool = Pool(
                id=new_id_str(),
                cri=str(cri),
                site_id=site.id,
                model=body.model,
                devices=body.devices,
                memory_gb=memory_gb,
                intra_node_link=body.intra_node_link,
                nodes=body.nodes,
                devices_per_node=body.devices_per_node,
                status="active",
                created_at=_now(),
            )
            session.add(pool)
            await session.flush()
            add_record(session, who.id, "pool.declare", pool.cri, signed)
        return PoolView(**pool_view(pool, site))

    async def _pool(self, session: AsyncSession, cri_text: str, *, lock: bool = False) -> tuple[Pool, Site]:
        cri = parse_cri(cri_text, catalogue=self.catalogue)
        if cri.kind != "pool":
            raise ValidationError("cri: expected a pool CRI, got a site CRI", field="cri")
        query = select(Pool, Site).join(Site, Pool.site_id == Site.id).where(Pool.cri == str(cri))
        if lock:
            query = query.with_for_update()
        row = (await session.execute(query)).one_or_none()
        if row is None:
            raise UnknownPoolError(f"no pool {cri}", field="cri")
        return row[0], row[1]

    async def get_pool(self, cri_text: str) -> PoolView:
        """A pool (or its tombstone)."""
        async with self.sessions() as session:
            pool, site = await self._pool(session, cri_text)
        return PoolView(**pool_view(pool, site))

    async def tombstone_pool(self, who: Principal, cri_text: str, signed: SignedRequest) -> PoolView:
        """Tombstone a pool (e.g. re-equipped: the new hardware gets a new CRI) and withdraw its offers."""
        who.require_role("provider", action="remove pools")
        now = _now()
        async with self.sessions.begin() as session:
            pool, site = await self._pool(session, cri_text, lock=True)
            who.require_owner(site.provider_id, f"pool {pool.cri}")
            if pool.status != "active":
                raise TombstonedError(f"pool {pool.cri} is already tombstoned", field="cri")
            pool.status, pool.tombstoned_at = "tombstoned", now
            await session.execute(
                update(Offer)
                .where(Offer.pool_id == pool.id, Offer.status == "open")
                .values(status="withdrawn", updated_at=now)
            )
            add_record(session, who.id, "pool.tombstone", pool.cri, signed)
        return PoolView(**pool_view(pool, site))

    # offers ----------------------------------------------------------------------------------------

    async def _check_capacity(
        self, session: AsyncSession, pool: Pool, devices: int, start: int, end: int | None, exclude: str | None
    ) -> None:
        query = select(Offer).where(Offer.pool_id == pool.id, Offer.status == "open")
        if exclude is not None:
            query = query.where(Offer.id != exclude)
        others = (await session.execute(query)).scalars().all()
        overlapping = sum(o.devices for o in others if _overlaps(o.window_start, o.window_end, start, end))
        if devices > pool.devices:
            raise ValidationError(f"devices: the pool has only {pool.devices} devices", field="devices")
        if overlapping + devices > pool.devices:
            raise PoolOvercommittedError(
                f"open offers overlapping this window already offer {overlapping} of the pool's {pool.devices} devices",
                field="devices",
                offered=overlapping,
                pool_devices=pool.devices,
            )

    async def post_offer(self, who: Principal, body: OfferPost, signed: SignedRequest) -> OfferView:
        """Offer devices of one of the provider's pools."""
        who.require_role("provider", action="post offers")
        now = self.clock()
        _check_not_ended(body.window_end, now)
        async with self.sessions.begin() as session:
            try:
                pool, site = await self._pool(session, body.pool_cri, lock=True)
            except ValidationError as exc:
                raise ValidationError(f"pool_cri: {exc.message}", field="pool_cri", **exc.details) from None
            who.require_owner(site.provider_id, f"pool {pool.cri}")
            if pool.status != "active" or site.status != "active":
                raise TombstonedError(f"pool {pool.cri} is deregistered", field="pool_cri")
            await self._check_capacity(session, pool, body.devices, body.window_start, body.window_end, None)
            offer = Offer(
                id=new_id_str(),
                pool_id=pool.id,
                provider_id=who.id,
                devices=body.devices,
                window_start=body.window_start,
                window_end=body.window_end,
                min_lease_seconds=body.min_lease_seconds,
                ask_fen=body.ask_fen,
                billing_modes=list(body.billing_modes),
                status="open",
                version=1,
                created_at=now,
                updated_at=now,
            )
            session.add(offer)
            await session.flush()
            add_record(session, who.id, "offer.post", offer.id, signed)
        return offer_view(offer, pool, site)

    async def _offer(self, session: AsyncSession, offer_id: str, *, lock: bool = False) -> tuple[Offer, Pool, Site]:
        query = (
            select(Offer, Pool, Site)
            .join(Pool, Offer.pool_id == Pool.id)
            .join(Site, Pool.site_id == Site.id)
            .where(Offer.id == offer_id)
        )
        if lock:
            query = query.with_for_update()
        row = (await session.execute(query)).one_or_none()
        if row is None:
            raise UnknownOfferError(f"no offer {offer_id}", field="id")
        return row[0], row[1], row[2]

    async def get_offer(self, who: Principal, offer_id: str) -> OfferView:
        """One of the caller's offers."""
        async with self.sessions() as session:
            offer, pool, site = await self._offer(session, offer_id)
        who.require_owner(offer.provider_id, f"offer {offer_id}")
        if offer.status == "withdrawn":
            raise OfferWithdrawnError(f"offer {offer_id} was withdrawn", field="id", withdrawn_at=offer.updated_at)
        return offer_view(offer, pool, site)

    async def list_offers(self, who: Principal, status: str | None = None) -> OfferList:
        """The caller's offers, newest first."""
        who.require_role("provider", action="list offers")
        query = (
            select(Offer, Pool, Site)
            .join(Pool, Offer.pool_id == Pool.id)
            .join(Site, Pool.site_id == Site.id)
            .where(Offer.provider_id == who.id)
            .order_by(Offer.created_at.desc(), Offer.id.desc())
        )
        if status is not None:
            query = query.where(Offer.status == status)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return OfferList(offers=[offer_view(o, p, s) for o, p, s in rows])

    async def amend_offer(
        self, who: Principal, offer_id: str, body: OfferAmendment, signed: SignedRequest
    ) -> OfferView:
        """Change an open offer; its version goes up by one."""
        who.require_role("provider", action="amend offers")
        changes = body.model_dump(exclude_unset=True, exclude={"expected_version"})
        now = self.clock()
        _check_not_ended(changes.get("window_end"), now)
        async with self.sessions.begin() as session:
            offer, pool, site = await self._offer(session, offer_id, lock=True)
            who.require_owner(offer.provider_id, f"offer {offer_id}")
            if offer.status != "open":
                raise OfferClosedError(f"offer {offer_id} is {offer.status}", field="id")
            if body.expected_version is not None and body.expected_version != offer.version:
                raise OfferVersionError(
                    f"offer is at version {offer.version}, not {body.expected_version}",
                    field="expected_version",
                    version=offer.version,
                )
            start = changes.get("window_start", offer.window_start)
            end = changes.get("window_end", offer.window_end)
            if end is not None and end <= start:
                raise ValidationError("window_end: must be after window_start", field="window_end")
            devices = changes.get("devices", offer.devices)
            await self._check_capacity(session, pool, devices, start, end, offer.id)
            for name, value in changes.items():
                setattr(offer, name, list(value) if name == "billing_modes" else value)
            offer.version += 1
            offer.updated_at = now
            add_record(session, who.id, "offer.amend", offer.id, signed)
        return offer_view(offer, pool, site)

    async def withdraw_offer(self, who: Principal, offer_id: str, signed: SignedRequest) -> OfferView:
        """Withdraw an open offer."""
        who.require_role("provider", action="withdraw offers")
        async with self.sessions.begin() as session:
            offer, pool, site = await self._offer(session, offer_id, lock=True)
            who.require_owner(offer.provider_id, f"offer {offer_id}")
            if offer.status != "open":
                raise OfferClosedError(f"offer {offer_id} is already {offer.status}", field="id")
            offer.status, offer.updated_at = "withdrawn", _now()
            offer.version += 1
            add_record(session, who.id, "offer.withdraw", offer.id, signed)
        return offer_view(offer, pool, site)

    # clearing snapshot -----------------------------------------------------------------------------

    async def live_offers(self, session: AsyncSession, now: int) -> list[LiveOffer]:
        """Open offers of active pools at active sites heard from within the heartbeat timeout, whose
        window has not ended; with the pool, site and catalogue attributes clearing needs."""
        query = live_offers_query(now, heard_since=now - self.heartbeat_timeout_seconds)
        out: list[LiveOffer] = []
        for offer, pool, site in (await session.execute(query)).all():
            model = self.catalogue.get(pool.model)
            out.append(
                LiveOffer(
                    offer_id=offer.id,
                    offer_version=offer.version,
                    provider_id=offer.provider_id,
                    pool_id=pool.id,
                    pool_cri=pool.cri,
                    site_id=site.id,
                    site_cri=site.cri,
                    region=site.region,
                    model=pool.model,
                    vendor=model.vendor,
                    family=model.family,
                    software_stack=model.software_stack,
                    domestic=model.domestic,
                    memory_gb=pool.memory_gb,
                    fp16_dense_tflops=model.fp16_dense_tflops,
                    scu=model.scu,
                    devices=offer.devices,
                    pool_devices=pool.devices,
                    nodes=pool.nodes,
                    devices_per_node=pool.devices_per_node,
                    window_start=offer.window_start,
                    window_end=offer.window_end,
                    min_lease_seconds=offer.min_lease_seconds,
                    ask_fen=offer.ask_fen,
                    billing_modes=tuple(offer.billing_modes),
                    last_heartbeat_at=site.last_heartbeat_at or 0,
                )
            )
        return out

    async def count_active_devices(self, session: AsyncSession) -> int:
        """Devices in active pools (for statistics)."""
        total = await session.execute(select(func.coalesce(func.sum(Pool.devices), 0)).where(Pool.status == "active"))
        return int(total.scalar_one())
