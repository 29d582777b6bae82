"""Federation: peering, capacity summaries, cross-exchange orders with two-phase holds, resync, mirroring.

Roles in one cross-exchange trade (specs/federation.md has the message flow):
- the buyer's exchange ("buyer side") forwards an order its local market cannot fill to peers whose
  signed capacity summaries could fill it, collects holds, then commits them (or releases them all);
- the owning exchange ("owner side") clears the forwarded order at once against its own pools (pay-as-ask
  immediate matching, so the buyer's exchange gets an answer within one request instead of waiting for the
  owner's next round), holds the capacity with an expiry, and on commit countersigns the contract the
  buyer's exchange signed: the contract carries both exchanges' signatures and is appended to both logs.

Rules kept everywhere: no peer call inside a database transaction; every inbound peer message is verified
(RFC 9421 signature by the peer key, destination bound, fresh, nonce not replayed) and idempotent by
(origin, message id); holds count as reservations (exchange.services.federation_capacity) and expire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.federation_capacity import (
    IN_FLIGHT_STATUSES,
    SUMMARY_HORIZON_SECONDS,
    Shape,
    Tranche,
    choose,
    free_tranches,
    limit_for,
    lock_capacity,
    refusal_field,
    summarize,
)
from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService
from exchange.services.peer_client import PeerClient, PeerRefusedError, PeerUnavailableError
from exchange.services.principals import NotOwnerError, Principal, RoleForbiddenError
from exchange.services.refusals import RefusalLog
from exchange.settings import Settings
from exchange.storage.base import now_s
from exchange.storage.contracts import Contract
from exchange.storage.federation import (
    CapacitySummaryRow,
    FederationEvent,
    FederationHold,
    FederationHoldLine,
    FederationOutbox,
    MirroredRecord,
    OutboundHold,
    Peer,
    PeerCheckpoint,
    PeerContract,
    PeerMessage,
)
from exchange.storage.orders import Order
from exchange.storage.participants import Participant, SeenNonce
from federation.dsse import record_payload_type, verify_envelope
from federation.errors import EnvelopeError, KeyFormatError, NoteError, ProofError, SignatureError
from federation.httpsig import verify_request
from federation.keys import Keyring, VerifyKey, parse_verifier_key
from federation.merkle import verify_consistency
from federation.note import NoteVerifier, verify_checkpoint
from federation.peering import (
    CapacitySummary,
    LocalIdentity,
    PeerIdentity,
    StaleSummaryError,
    SummaryError,
    VerifiedPeerMessage,
    check_authority,
    envelope_json,
    message_hash,
    sign_contract,
    sign_summary,
    verify_contract,
    verify_peer_request,
    verify_summary,
)
from identifiers.catalogue import Catalogue, load_catalogue
from identifiers.cri import parse_cri
from identifiers.errors import AuthenticationError, ConflictError, HetexError, NotFoundError, ValidationError
from identifiers.ids import new_id_str

log = logging.getLogger("hetex.federation")

OPEN_ORDER = ("open", "partially_filled")
IN_FLIGHT = IN_FLIGHT_STATUSES
MIRRORABLE = frozenset({"usage", "settlement"})
PEER_NONCE_PREFIX = "p:"
LATENCY_SAMPLES = 10_000
SUMMARY_MIN_GAP_SECONDS = 0.5
PEER_MARK_REFRESH_SECONDS = 5
FORWARD_CONCURRENCY = 4
PEER_CACHE_SECONDS = 1.0


class UnknownAuthorityError(NotFoundError):
    """A CRI names an authority that is neither this exchange nor a known peer."""

    code = "unknown_authority"


class UnknownPeerError(NotFoundError):
    """No peer with that authority."""

    code = "unknown_peer"


class UnknownHoldError(NotFoundError):
    """No hold with that id for the calling peer."""

    code = "unknown_hold"


class PeerMessageReusedError(ConflictError):
    """A message id was already used by this peer for a different message."""

    code = "message_id_reused"


# --------------------------------------------------------------------------------------------- wire models


class ForwardedOrder(BaseModel):
    """The order part of an order_offer message: what the buyer's exchange asks the owner to hold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    origin_order_id: str = Field(min_length=1, max_length=64)
    buyer_id: str = Field(min_length=1, max_length=64)
    models: list[str] | None = Field(default=None, min_length=1, max_length=64)
    regions: list[str] | None = Field(default=None, min_length=1, max_length=64)
    limits: dict[str, int] = Field(min_length=1, max_length=64)
    billing_mode: str = Field(default="per_minute", max_length=24)
    devices_max: int = Field(ge=1, le=1_000_000)
    devices_min: int = Field(ge=1, le=1_000_000)
    start_at: int = Field(ge=0)
    end_at: int = Field(ge=1)
    # the order's shape (sent only when not the default, so an older owner still accepts plain orders)
    max_pools: int | None = Field(default=None, ge=1, le=1000)
    same_model: bool = False
    colocation: Literal["site", "region", "any"] = "any"
    #: an SCU order: SCU (A100-equivalents) to hold, converted per model with the owner's catalogue SCU, on
    #: one model; devices_max still caps the devices; scu_min is the least worth holding (default: all)
    quantity_scu: str | None = Field(default=None, max_length=40)
    scu_min: str | None = Field(default=None, max_length=40)

    def shape(self, scu: Mapping[str, Decimal | None]) -> Shape:
        """The placement shape for immediate matching; ValidationError naming a bad SCU field."""
        return Shape(
            max_pools=self.max_pools,
            same_model=self.same_model,
            colocation=self.colocation,
            quantity_scu=_positive_decimal(self.quantity_scu, "quantity_scu"),
            scu_min=_positive_decimal(self.scu_min, "scu_min"),
            scu=scu,
        )


def _positive_decimal(text: str | None, name: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(0)
    if not value.is_finite() or value <= 0:
        raise ValidationError(f"{name} must be a positive decimal", field=f"body.order.{name}")
    return value


class CommitBody(BaseModel):
    """hold_commit body: the hold and the contracts the buyer's exchange signed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hold_id: str = Field(min_length=1, max_length=36)
    contracts: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class HoldRef(BaseModel):
    """hold_release body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hold_id: str = Field(min_length=1, max_length=36)


class MirrorItem(BaseModel):
    """One mirrored record: its type (usage, settlement), id, contract and the owner-signed envelope."""

    model_config = ConfigDict(extra="forbid", strict=True)

    record_type: str
    record_id: str = Field(min_length=1, max_length=64)
    contract_id: str = Field(min_length=1, max_length=36)
    envelope: dict[str, Any]


class MirrorBody(BaseModel):
    """mirror body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    records: list[MirrorItem] = Field(min_length=1, max_length=1000)


class SummaryBody(BaseModel):
    """capacity_summary body: the DSSE envelope."""

    model_config = ConfigDict(extra="forbid", strict=True)

    summary: dict[str, Any]


def _parse(model: type[BaseModel], data: Any, field_prefix: str = "body") -> Any:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in (field_prefix, *first["loc"]))
        raise ValidationError(f"{where}: {first['msg']}", field=where) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _peer_identity(row: Peer) -> PeerIdentity:
    return PeerIdentity(row.authority, row.origin, VerifyKey.from_base64(row.public_key), row.url)


def _order_terms(order: Order) -> dict[str, Any]:
    """What federation needs from an order's spec (DESIGN.md section 6 fields; device quantities only)."""
    spec = order.spec or {}
    limits = spec.get("limit_fen_per_device_hour") or {}
    return {
        "models": spec.get("models"),
        "regions": spec.get("regions"),
        "limits": {str(k): int(v) for k, v in limits.items()},
        "billing_mode": spec.get("billing_mode") or order.billing_mode or "per_minute",
        "duration": int(spec.get("duration_seconds") or 3600),
        "start_earliest": spec.get("start_earliest"),
        "all_or_nothing": bool(spec.get("all_or_nothing", True)),
        "min_fill_devices": spec.get("min_fill_devices"),
        "max_pools": spec.get("max_pools"),
        "same_model": bool(spec.get("same_model", False)),
        "colocation": str(spec.get("colocation") or "any"),
    }


def _shape_fields(terms: Mapping[str, Any]) -> dict[str, Any]:
    """The order_offer shape fields that differ from the default (max_pools, same_model, colocation)."""
    out: dict[str, Any] = {}
    if terms["max_pools"] is not None:
        out["max_pools"] = int(terms["max_pools"])
    if terms["same_model"]:
        out["same_model"] = True
    if terms["colocation"] != "any":
        out["colocation"] = terms["colocation"]
    return out


def _check_shape(lines: Sequence[Mapping[str, Any]], terms: Mapping[str, Any]) -> None:
    """The held lines keep the order's shape: at most max_pools pools, one model, one site or region."""
    bodies = [line.get("body") or {} for line in lines]
    problems = []
    if terms["max_pools"] is not None and len({b.get("pool_cri") for b in bodies}) > int(terms["max_pools"]):
        problems.append("max_pools")
    if terms["same_model"] and len({b.get("model") for b in bodies}) > 1:
        problems.append("same_model")
    if terms["colocation"] == "region" and len({b.get("region") for b in bodies}) > 1:
        problems.append("colocation")
    if terms["colocation"] == "site" and len({str(parse_cri(str(b.get("pool_cri"))).site_cri) for b in bodies}) > 1:
        problems.append("colocation")
    if problems:
        raise ValidationError(f"held lines break the order's shape: {', '.join(problems)}", field=problems[0])


def contract_body_for(
    *,
    contract_id: str,
    owner: str,
    buyer: str,
    hold_id: str,
    order: ForwardedOrder,
    owner_order_id: str,
    tranche: Any,
    devices: int,
    fee_bps: int,
    created_at: int,
) -> dict[str, Any]:
    """The cross-exchange contract record both exchanges sign (pay-as-ask: buyer price = provider ask)."""
    return {
        "contract_id": contract_id,
        "kind": "cross_exchange",
        "owner_authority": owner,
        "buyer_authority": buyer,
        "hold_id": hold_id,
        "order_id": order.origin_order_id,
        "owner_order_id": owner_order_id,
        "buyer_id": order.buyer_id,
        "pool_id": tranche.pool_id,
        "pool_cri": tranche.pool_cri,
        "offer_id": tranche.offer_id,
        "provider_id": tranche.provider_id,
        "model": tranche.model,
        "region": tranche.region,
        "devices": devices,
        "start_at": order.start_at,
        "end_at": order.end_at,
        "buyer_price_fen": tranche.ask_fen,
        "provider_price_fen": tranche.ask_fen,
        "fee_bps": fee_bps,
        "billing_mode": order.billing_mode,
        "billing_terms": {},
        "created_at": created_at,
    }


@dataclass(frozen=True)
class HeldAtPeer:
    """A hold a peer granted for one of our orders, as answered (kept in memory until commit)."""

    outbound_id: str
    order_id: str
    peer: PeerIdentity
    remote_hold_id: str
    lines: list[dict[str, Any]]
    devices: int
    expires_at: int


class FederationService:
    """One exchange's side of the federation (see the module docstring)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        identity: IdentityService,
        ledger: LedgerService,
        *,
        clock: Callable[[], int] = now_s,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.sessions = sessions
        #: catalogue SCU per model (an SCU order forwarded here is converted per model with it)
        self.scu: dict[str, Decimal | None] = {m.code: m.scu for m in (catalogue or load_catalogue()).models}
        self.settings = settings
        self.identity = identity
        self.ledger = ledger
        self.clock = clock
        self.authority = check_authority(settings.authority, "HETEX_AUTHORITY")
        self.client = PeerClient(lambda: self.me, timeout=settings.federation_peer_timeout_seconds, clock=clock)
        self.forward_latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.orders_forwarded = 0
        #: refused peer messages by reason (signature, destination, freshness, replay)
        self.refusals = RefusalLog(log, "peer message")
        self.orders_committed = 0
        self._next_try: dict[str, float] = {}
        self._peer_marks: dict[str, tuple[bool, int]] = {}
        self._peer_cache: tuple[float, dict[str, PeerIdentity]] | None = None
        self._committing: set[str] = set()
        self._publish_wanted = asyncio.Event()
        self._forward_wanted = asyncio.Event()
        self._forward_lock = asyncio.Lock()
        #: Hook: the clearing-round lock (RoundService.lock.hold). A hold is granted only while no round is
        #: between its snapshot and its commit, so a round never allocates capacity a peer holds.
        self.seller_lock: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None

    # ------------------------------------------------------------------------------------------ identity

    @property
    def url(self) -> str:
        """This exchange's public base URL."""
        return (self.settings.public_base_url or f"http://{self.settings.host}:{self.settings.port}").rstrip("/")

    @property
    def me(self) -> LocalIdentity:
        """This exchange's identity with its current signing key."""
        key = self.identity.signing_key
        return LocalIdentity(PeerIdentity(self.authority, self.settings.origin, key.public, self.url), key)

    def identity_view(self) -> dict[str, Any]:
        """What an operator gives other operators to peer with this exchange."""
        me = self.me.identity
        return {
            "authority": me.authority,
            "origin": me.origin,
            "url": me.url,
            "key_id": me.key_id,
            "public_key": me.public_key.to_base64(),
            "verifier_key": me.verifier_key,
        }

    # ------------------------------------------------------------------------------------------ events

    async def record_event(self, kind: str, peer: str | None, detail: Mapping[str, Any]) -> None:
        """Store an operator-visible event (own transaction) and log it."""
        log.warning("federation event %s peer=%s %s", kind, peer, dict(detail))
        async with self.sessions.begin() as session:
            session.add(
                FederationEvent(id=new_id_str(), at=self.clock(), peer_authority=peer, kind=kind, detail=dict(detail))
            )

    async def events(self, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest events first."""
        async with self.sessions() as session:
            stmt = select(FederationEvent).order_by(FederationEvent.at.desc(), FederationEvent.id.desc()).limit(limit)
            if kind is not None:
                stmt = stmt.where(FederationEvent.kind == kind)
            rows = (await session.scalars(stmt)).all()
        return [{"id": r.id, "at": r.at, "peer": r.peer_authority, "kind": r.kind, "detail": r.detail} for r in rows]

    # ------------------------------------------------------------------------------------------ signed reads

    async def reader_scope(self, who: Principal, *, operator_only: bool = False) -> str | None:
        """Who may read federation records: None for the operator (everything), the peer's authority for a
        peer exchange (only what concerns it); RoleForbiddenError (403) for anyone else."""
        who.require_role(*(("operator",) if operator_only else ("operator", "peer")), action="read federation records")
        if who.role == "operator":
            return None
        async with self.sessions() as session:
            authority = await session.scalar(
                select(Peer.authority).where(Peer.participant_id == who.id, Peer.status == "active")
            )
        if authority is None:
            raise RoleForbiddenError(
                "this peer key belongs to no active peer exchange", reason="role_forbidden", role=who.role
            )
        return str(authority)

    @staticmethod
    def _own_peer(scope: str | None, asked: str | None) -> str | None:
        """The peer filter a caller may use: its own authority for a peer (NotOwnerError if it asks for
        another's), whatever was asked for the operator."""
        if scope is None:
            return asked
        if asked and asked != scope:
            raise NotOwnerError("a peer exchange reads only its own federation records", reason="not_owner")
        return scope

    async def contracts_for(
        self, who: Principal, peer: str | None = None, order_id: str | None = None
    ) -> list[dict[str, Any]]:
        """GET /v1/federation/contracts: every contract for the operator, a peer's own for a peer."""
        scope = await self.reader_scope(who)
        return await self.contracts_view(self._own_peer(scope, peer), order_id)

    async def holds_for(self, who: Principal, status: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/holds: every hold for the operator, the holds granted to a peer for that peer."""
        scope = await self.reader_scope(who)
        return await self.holds_view(status, peer=scope)

    async def mirrored_for(self, who: Principal, contract_id: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/mirrored: every record for the operator, the ones a peer mirrored for that peer."""
        scope = await self.reader_scope(who)
        return await self.mirrored_view(contract_id, peer=scope)

    async def events_for(self, who: Principal, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/events: operator only (events name every peer and hold refusal details)."""
        await self.reader_scope(who, operator_only=True)
        return await self.events(limit, kind)

    async def peers_for(self, who: Principal) -> list[dict[str, Any]]:
        """GET /v1/federation/peers: operator only (peer URLs, reachability and last errors are internal)."""
        await self.reader_scope(who, operator_only=True)
        return await self.peers_view()

    # ------------------------------------------------------------------------------------------ peers

    async def add_peer(self, url: str, key: str, authority: str, origin: str | None = None) -> dict[str, Any]:
        """Trust another exchange: its URL, its exchange key (base64, or a C2SP verifier key string naming
        its origin) and its authority code. Re-adding an authority updates it and clears its log status."""
        check_authority(authority)
        if authority == self.authority:
            raise ValidationError("a peer cannot have this exchange's own authority", field="authority")
        if not url.startswith(("http://", "https://")):
            raise ValidationError("url must be http:// or https://", field="url")
        try:
            if "+" in key and key.count("+") >= 2 and not key.endswith("="):
                vk = parse_verifier_key(key)
                public, name = vk.key, vk.name
                if origin is not None and origin != name:
                    raise ValidationError("origin does not match the verifier key's name", field="origin")
            else:
                public, name = VerifyKey.from_base64(key), origin or ""
        except KeyFormatError as exc:
            raise ValidationError(f"key: {exc.message}", field="key") from None
        if not name:
            raise ValidationError("give the peer's origin (key name) or a verifier key string", field="origin")
        identity = PeerIdentity(authority, name, public, url.rstrip("/"))
        async with self.sessions.begin() as session:
            participant = await session.scalar(select(Participant).where(Participant.public_key == public.to_base64()))
            if participant is None:
                participant = Participant(
                    id=new_id_str(),
                    role="peer",
                    name=f"exchange {authority}",
                    public_key=public.to_base64(),
                    key_id=identity.key_id,
                    operator_code=None,
                    status="active",
                    created_at=self.clock(),
                )
                session.add(participant)
                await session.flush()
            row = await session.get(Peer, authority)
            if row is None:
                row = Peer(authority=authority, created_at=self.clock())
                session.add(row)
            row.url = identity.url or url
            row.origin = name
            row.public_key = public.to_base64()
            row.key_id = identity.key_id
            row.participant_id = participant.id
            row.status = "active"
            row.log_status = "unknown"
            row.log_problem = None
            await session.flush()
            view = self._peer_view(row, None, None)
        self._peer_cache = None
        log.info("peer %s added at %s (key %s)", authority, url, identity.key_id)
        self._publish_wanted.set()
        return view

    async def _peer_rows(self, session: AsyncSession, *, active_only: bool = True) -> list[Peer]:
        stmt = select(Peer).order_by(Peer.authority)
        if active_only:
            stmt = stmt.where(Peer.status == "active")
        return list((await session.scalars(stmt)).all())

    async def peer(self, authority: str) -> PeerIdentity:
        """A known active peer's identity."""
        async with self.sessions() as session:
            row = await session.get(Peer, authority)
        if row is None or row.status != "active":
            raise UnknownPeerError(f"no peer {authority}", field="authority")
        return _peer_identity(row)

    async def peers(self) -> list[PeerIdentity]:
        """Every active peer."""
        async with self.sessions() as session:
            return [_peer_identity(r) for r in await self._peer_rows(session)]

    def _peer_view(self, row: Peer, cp: PeerCheckpoint | None, summary: CapacitySummaryRow | None) -> dict[str, Any]:
        now = self.clock()
        return {
            "authority": row.authority,
            "url": row.url,
            "origin": row.origin,
            "key_id": row.key_id,
            "public_key": row.public_key,
            "status": row.status,
            "reachable": row.reachable,
            "last_ok_at": row.last_ok_at,
            "last_error_at": row.last_error_at,
            "last_error": row.last_error,
            "last_sync_at": row.last_sync_at,
            "log_status": row.log_status,
            "log_problem": row.log_problem,
            "checkpoint": None
            if cp is None
            else {"size": cp.size, "root": _b64(cp.root), "consistent": cp.consistent, "at": cp.created_at},
            "summary": None
            if summary is None
            else {
                "version": summary.version,
                "issued_at": summary.issued_at,
                "expires_at": summary.expires_at,
                "fresh": summary.expires_at > now,
            },
        }

    async def peers_view(self) -> list[dict[str, Any]]:
        """GET /v1/federation/peers: each peer with reachability, log status, last checkpoint and summary."""
        async with self.sessions() as session:
            rows = await self._peer_rows(session, active_only=False)
            out = []
            for row in rows:
                cp = await session.scalar(
                    select(PeerCheckpoint)
                    .where(PeerCheckpoint.peer_authority == row.authority)
                    .order_by(PeerCheckpoint.size.desc())
                    .limit(1)
                )
                summary = await session.get(CapacitySummaryRow, row.authority)
                out.append(self._peer_view(row, cp, summary))
        return out

    async def keys_view(self) -> dict[str, Any]:
        """This exchange's key and every peer key (what an audit verifier trusts for mirrored records)."""
        peers = await self.peers()
        return {
            "self": self.identity_view(),
            "peers": [
                {
                    "authority": p.authority,
                    "origin": p.origin,
                    "key_id": p.key_id,
                    "public_key": p.public_key.to_base64(),
                    "verifier_key": p.verifier_key,
                }
                for p in peers
            ],
        }

    async def peer_keyring(self) -> Keyring:
        """Keyring of every peer exchange key (for audit verification of mirrored and two-party records)."""
        ring = Keyring()
        for p in await self.peers():
            ring.add_named(p.origin, p.public_key, owner=p.authority)
        return ring

    async def _mark_peer(self, authority: str, *, ok: bool, error: str | None = None, synced: bool = False) -> None:
        now = self.clock()
        last = self._peer_marks.get(authority)
        if ok and not synced and last is not None and last[0] and now - last[1] < PEER_MARK_REFRESH_SECONDS:
            return  # still reachable and recently recorded: spare a write per message
        self._peer_marks[authority] = (ok, now)
        values: dict[str, Any] = {"reachable": ok}
        if ok:
            values["last_ok_at"] = now
        else:
            values.update(last_error_at=now, last_error=(error or "")[:500])
        if synced:
            values["last_sync_at"] = now
        async with self.sessions.begin() as session:
            await session.execute(update(Peer).where(Peer.authority == authority).values(**values))

    # ------------------------------------------------------------------------------------------ resolution

    async def resolve_location(self, cri_text: str) -> str | None:
        """None when this exchange resolves the CRI; else the owning peer's resolve URL (307 target)."""
        cri = parse_cri(cri_text)
        if cri.authority == self.authority:
            return None
        async with self.sessions() as session:
            row = await session.get(Peer, cri.authority)
        if row is None or row.status != "active":
            raise UnknownAuthorityError(
                f"authority {cri.authority} is neither this exchange ({self.authority}) nor a known peer", field="cri"
            )
        return f"{row.url.rstrip('/')}/v1/resolve/{quote(str(cri), safe=':')}"

    # ------------------------------------------------------------------------------------------ inbound

    async def _peers_by_key_id(self) -> dict[str, PeerIdentity]:
        """Active peers by key id, cached for a second (one query less per inbound message)."""
        cached = self._peer_cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.sessions() as session:
            peers = {r.key_id: _peer_identity(r) for r in await self._peer_rows(session)}
        self._peer_cache = (time.monotonic() + PEER_CACHE_SECONDS, peers)
        return peers

    async def _remember_nonce(self, keyid: str, nonce: str, created: int) -> None:
        """Refuse a second use of a peer request nonce within the window (shared by every process)."""
        if len(nonce) > 128:
            raise SignatureError("signature_malformed", "nonce longer than 128 characters")
        now = self.clock()
        key = PEER_NONCE_PREFIX + keyid
        expires_at = max(created, now) + self.settings.signature_window_seconds
        try:
            async with self.sessions.begin() as session:
                session.add(SeenNonce(key_id=key, nonce=nonce, expires_at=expires_at))
                await session.flush()
        except IntegrityError:
            async with self.sessions.begin() as session:
                revived = await session.execute(
                    update(SeenNonce)
                    .where(SeenNonce.key_id == key, SeenNonce.nonce == nonce, SeenNonce.expires_at < now)
                    .values(expires_at=expires_at)
                )
            if getattr(revived, "rowcount", 0) != 1:
                raise SignatureError("nonce_replayed", "nonce was already used", keyid=keyid) from None

    async def verify_inbound(
        self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes, expected_type: str
    ) -> VerifiedPeerMessage:
        """Verify a peer request (signature, destination, freshness, nonce); refusals are counted by reason and
        logged at a bounded rate (self.refusals), never stored per request."""
        peers = await self._peers_by_key_id()
        try:
            verified = verify_peer_request(
                method,
                url,
                headers,
                body,
                peer_by_key_id=peers.get,
                self_authority=self.authority,
                expected_type=expected_type,
                now=self.clock(),
                max_skew=self.settings.signature_window_seconds,
            )
            sig = verified.signature
            await self._remember_nonce(sig.keyid, sig.nonce, sig.created)
        except AuthenticationError as exc:
            keyid = _peek_keyid(headers)
            peer = peers.get(keyid or "")
            who = peer.authority if peer else "unknown sender"
            self.refusals.refused(str(exc.details.get("reason", exc.code)), f"{who} {url}: {exc.message}")
            raise
        return verified

    async def verify_peer_get(self, method: str, url: str, headers: Sequence[tuple[str, str]]) -> PeerIdentity:
        """Verify a signed GET from a peer (peer-only reads); refusals are logged as events."""
        peers = await self._peers_by_key_id()
        try:
            sig = verify_request(
                method,
                url,
                headers,
                b"",
                lambda k: peers[k].public_key if k in peers else None,
                now=self.clock(),
                max_skew=self.settings.signature_window_seconds,
            )
            await self._remember_nonce(sig.keyid, sig.nonce, sig.created)
        except AuthenticationError as exc:
            self.refusals.refused(str(exc.details.get("reason", exc.code)), f"GET {url}: {exc.message}")
            raise
        return peers[sig.keyid]

    async def _replay(self, session: AsyncSession, v: VerifiedPeerMessage) -> dict[str, Any] | None:
        """The stored answer of an earlier message with the same (origin, message id), or None."""
        row = await session.get(PeerMessage, (v.peer.authority, v.message_id))
        if row is None:
            return None
        if row.request_hash != message_hash(v.message):
            raise PeerMessageReusedError(
                f"message id {v.message_id} was already used for a different message", field="message_id"
            )
        return dict(row.response, replayed=True)

    def _store(self, session: AsyncSession, v: VerifiedPeerMessage, response: dict[str, Any]) -> dict[str, Any]:
        session.add(
            PeerMessage(
                origin_authority=v.peer.authority,
                message_id=v.message_id,
                msg_type=v.type,
                request_hash=message_hash(v.message),
                status_code=200,
                response=response,
                created_at=self.clock(),
            )
        )
        return response

    async def handle(
        self,
        kind: str,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        hold_id: str | None = None,
    ) -> dict[str, Any]:
        """Verify and dispatch one inbound peer request (the only entry point of peer POST routes)."""
        v = await self.verify_inbound(method, url, headers, body, kind)
        if kind == "capacity_summary":
            return await self.receive_summary(v)
        if kind == "order_offer":
            return await self.receive_order(v)
        if kind in ("hold_commit", "hold_release"):
            if hold_id is not None and v.body.get("hold_id") != hold_id:
                raise ValidationError("hold_id in the body does not match the URL", field="hold_id")
            if kind == "hold_commit":
                return await self.receive_commit(v)
            return await self.receive_release(v)
        if kind == "mirror":
            return await self.receive_mirror(v)
        raise ValidationError(f"unknown message kind {kind}", field="type")

    # ------------------------------------------------------------------------------------------ owner side

    async def receive_order(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of order_offer: immediate matching against own pools; hold what fits, with an expiry."""
        order = _parse(ForwardedOrder, v.body.get("order"), "body.order")
        if order.end_at <= order.start_at:
            raise ValidationError("end_at must be after start_at", field="body.order.end_at")
        if order.devices_min > order.devices_max:
            raise ValidationError("devices_min must not exceed devices_max", field="body.order.devices_min")
        async with self.seller_lock() if self.seller_lock is not None else contextlib.nullcontext():
            return await self._grant_hold(v, order)

    async def _grant_hold(self, v: VerifiedPeerMessage, order: ForwardedOrder) -> dict[str, Any]:
        now = self.clock()
        shape = order.shape(self.scu)
        async with self.sessions.begin() as session:
            await lock_capacity(session)
            stored = await self._replay(session, v)
            if stored is not None:
                return stored
            peer_row = await session.get(Peer, v.peer.authority)
            assert peer_row is not None and peer_row.participant_id is not None
            tranches = await free_tranches(
                session,
                start=order.start_at,
                end=order.end_at,
                now=now,
                heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
                models=order.models,
                regions=order.regions,
            )
            terms: dict[str, Any] = {
                "devices_max": order.devices_max,
                "devices_min": order.devices_min,
                "limits": order.limits,
                "models": order.models,
                "regions": order.regions,
                "billing_mode": order.billing_mode,
                "duration": order.end_at - order.start_at,
                "shape": shape,
            }
            picks = choose(tranches, **terms)
            if not picks:
                refused: dict[str, Any] = {"status": "refused", "reason": "no_capacity"}
                blamed = refusal_field(tranches, **terms)
                if blamed is not None:
                    refused.update(reason="shape_unsatisfiable" if blamed != "quantity_scu" else "no_scu", field=blamed)
                return self._store(session, v, refused)
            hold_id = new_id_str()
            total = sum(n for _t, n in picks)
            mirror = Order(
                id=new_id_str(),
                buyer_id=peer_row.participant_id,
                idempotency_key=f"fed:{v.peer.authority}:{v.message_id}",
                request_hash=message_hash(v.message),
                spec=order.model_dump(),
                billing_mode=order.billing_mode[:24],
                status="peer_held",
                quantity_devices=total,
                filled_devices=0,
                start_latest=order.start_at,
                created_at=now,
            )
            session.add(mirror)
            await session.flush()
            expires_at = now + self.settings.federation_hold_ttl_seconds
            session.add(
                FederationHold(
                    id=hold_id,
                    origin_authority=v.peer.authority,
                    message_id=v.message_id,
                    order_id=mirror.id,
                    status="held",
                    devices=total,
                    start_at=order.start_at,
                    end_at=order.end_at,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
            await session.flush()
            lines = []
            for tranche, n in picks:
                cid = new_id_str()
                body = contract_body_for(
                    contract_id=cid,
                    owner=self.authority,
                    buyer=v.peer.authority,
                    hold_id=hold_id,
                    order=order,
                    owner_order_id=mirror.id,
                    tranche=tranche,
                    devices=n,
                    fee_bps=self.settings.fee_bps,
                    created_at=now,
                )
                session.add(
                    FederationHoldLine(
                        contract_id=cid,
                        hold_id=hold_id,
                        pool_id=tranche.pool_id,
                        offer_id=tranche.offer_id,
                        devices=n,
                        start_at=order.start_at,
                        end_at=order.end_at,
                        price_fen=tranche.ask_fen,
                        body=body,
                    )
                )
                lines.append({"contract_id": cid, "devices": n, "body": body})
            response = {
                "status": "held",
                "hold_id": hold_id,
                "devices": total,
                "expires_at": expires_at,
                "lines": lines,
            }
            self._store(session, v, response)
        self._publish_wanted.set()
        return response

    async def receive_commit(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of hold_commit: check the buyer exchange signed exactly the held contracts, countersign,
        write the contracts and append them to this log, in one transaction; refused if the hold expired."""
        expired: list[tuple[str, int]] = []
        try:
            return await self._receive_commit(v, expired)
        finally:
            for hold_id, devices in expired:  # found expired by the commit itself, before the sweeper
                await self.record_event("hold_expired", v.peer.authority, {"hold_id": hold_id, "devices": devices})

    async def _receive_commit(self, v: VerifiedPeerMessage, expired: list[tuple[str, int]]) -> dict[str, Any]:
        body = _parse(CommitBody, v.body)
        now = self.clock()
        me = self.me
        async with self.sessions.begin() as session:
            await lock_capacity(session)
            stored = await self._replay(session, v)
            if stored is not None:
                return stored
            hold = await session.get(FederationHold, body.hold_id)
            if hold is None or hold.origin_authority != v.peer.authority:
                raise UnknownHoldError(f"no hold {body.hold_id} for {v.peer.authority}", field="hold_id")
            if hold.status == "held" and hold.expires_at <= now:
                await self._expire_hold(session, hold, now)
                expired.append((hold.id, hold.devices))
            if hold.status != "held":
                return self._store(
                    session, v, {"status": "refused", "reason": f"hold_{hold.status}", "hold_id": hold.id}
                )
            lines = (
                await session.scalars(
                    select(FederationHoldLine)
                    .where(FederationHoldLine.hold_id == hold.id)
                    .order_by(FederationHoldLine.contract_id)
                )
            ).all()
            signed: dict[str, dict[str, Any]] = {}
            for i, env in enumerate(body.contracts):
                try:
                    payload = verify_contract(env, v.peer, me.identity, require_both=False)
                except AuthenticationError as exc:
                    raise ValidationError(f"contracts[{i}]: {exc.message}", field=f"body.contracts[{i}]") from None
                signed[str(payload.get("contract_id"))] = env
            peer_row = await session.get(Peer, v.peer.authority)
            assert peer_row is not None and peer_row.participant_id is not None
            out = []
            for line in lines:
                env = signed.get(line.contract_id)
                if env is None or envelope_json(env) != line.body:
                    raise ValidationError(
                        f"contract {line.contract_id} is missing or differs from the held one", field="body.contracts"
                    )
                b = line.body
                contract = Contract(
                    id=line.contract_id,
                    round_id=None,
                    order_id=hold.order_id,
                    pool_id=line.pool_id,
                    offer_id=line.offer_id,
                    buyer_id=peer_row.participant_id,
                    provider_id=b["provider_id"],
                    model=b["model"],
                    region=b["region"],
                    devices=line.devices,
                    start_at=line.start_at,
                    end_at=line.end_at,
                    buyer_price_fen=line.price_fen,
                    provider_price_fen=line.price_fen,
                    fee_bps=int(b["fee_bps"]),
                    billing_mode=str(b["billing_mode"]),
                    billing_terms=dict(b.get("billing_terms") or {}),
                    status="pending",
                    created_at=now,
                )
                session.add(contract)
                await session.flush()
                appended = await self.ledger.append_signed(session, "contract", line.contract_id, env)
                contract.log_index = appended.index
                session.add(self._peer_contract("owner", v.peer.authority, hold.order_id, b, appended, now))
                out.append(
                    {"contract_id": line.contract_id, "log_index": appended.index, "envelope": appended.envelope}
                )
            hold.status = "committed"
            hold.updated_at = now
            await session.execute(
                update(Order)
                .where(Order.id == hold.order_id)
                .values(status="filled", filled_devices=hold.devices, updated_at=now)
            )
            response = {"status": "committed", "hold_id": hold.id, "contracts": out}
            self._store(session, v, response)
        self._publish_wanted.set()
        return response

    def _peer_contract(
        self, side: str, peer: str, order_id: str, body: Mapping[str, Any], appended: Any, now: int
    ) -> PeerContract:
        return PeerContract(
            contract_id=str(body["contract_id"]),
            side=side,
            peer_authority=peer,
            order_id=order_id,
            hold_id=str(body["hold_id"]),
            pool_cri=str(body["pool_cri"]),
            model=str(body["model"]),
            region=str(body["region"]),
            devices=int(body["devices"]),
            start_at=int(body["start_at"]),
            end_at=int(body["end_at"]),
            price_fen=int(body["buyer_price_fen"]),
            envelope=appended.envelope,
            log_index=appended.index,
            created_at=now,
        )

    async def receive_release(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Owner side of hold_release: give the held capacity back (a committed hold stays committed)."""
        body = _parse(HoldRef, v.body)
        now = self.clock()
        async with self.sessions.begin() as session:
            await lock_capacity(session)
            stored = await self._replay(session, v)
            if stored is not None:
                return stored
            hold = await session.get(FederationHold, body.hold_id)
            if hold is None or hold.origin_authority != v.peer.authority:
                raise UnknownHoldError(f"no hold {body.hold_id} for {v.peer.authority}", field="hold_id")
            if hold.status == "held":
                hold.status = "released"
                hold.updated_at = now
                await session.execute(
                    update(Order).where(Order.id == hold.order_id).values(status="cancelled", updated_at=now)
                )
            response = {"status": hold.status, "hold_id": hold.id}
            self._store(session, v, response)
        self._publish_wanted.set()
        return response

    async def _expire_hold(self, session: AsyncSession, hold: FederationHold, now: int) -> None:
        hold.status = "expired"
        hold.updated_at = now
        await session.execute(update(Order).where(Order.id == hold.order_id).values(status="expired", updated_at=now))

    async def expire_holds(self) -> list[str]:
        """Sweeper: holds past their expiry become `expired` (their capacity was already free to others)."""
        now = self.clock()
        async with self.sessions.begin() as session:
            holds = (
                await session.scalars(
                    select(FederationHold).where(FederationHold.status == "held", FederationHold.expires_at <= now)
                )
            ).all()
            for hold in holds:
                await self._expire_hold(session, hold, now)
            expired = [(h.id, h.origin_authority, h.devices) for h in holds]
        for hold_id, peer, devices in expired:
            await self.record_event("hold_expired", peer, {"hold_id": hold_id, "devices": devices})
        if expired:
            self._publish_wanted.set()
        return [h for h, _p, _d in expired]

    async def holds_view(self, status: str | None = None, *, peer: str | None = None) -> list[dict[str, Any]]:
        """Owner-side holds (newest first), optionally only those granted to `peer`."""
        async with self.sessions() as session:
            stmt = select(FederationHold).order_by(FederationHold.created_at.desc(), FederationHold.id.desc())
            if status:
                stmt = stmt.where(FederationHold.status == status)
            if peer:
                stmt = stmt.where(FederationHold.origin_authority == peer)
            rows = (await session.scalars(stmt.limit(500))).all()
        return [
            {
                "hold_id": h.id,
                "peer": h.origin_authority,
                "status": h.status,
                "devices": h.devices,
                "expires_at": h.expires_at,
                "order_id": h.order_id,
            }
            for h in rows
        ]

    # ------------------------------------------------------------------------------------------ summaries

    async def build_summary(self) -> dict[str, Any]:
        """Compute, version (monotonic, stored) and sign this exchange's capacity summary; the envelope."""
        now = self.clock()
        me = self.me
        async with self.sessions.begin() as session:
            tranches = await free_tranches(
                session,
                start=now,
                end=now + SUMMARY_HORIZON_SECONDS,
                now=now,
                heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
            )
            own = await session.get(CapacitySummaryRow, self.authority)
            version = 1 if own is None else own.version + 1
            summary = CapacitySummary(
                origin_authority=self.authority,
                url=self.url,
                version=version,
                issued_at=now,
                expires_at=now + self.settings.federation_summary_ttl_seconds,
                classes=summarize(tranches),
            )
            envelope = sign_summary(summary, me)
            if own is None:
                own = CapacitySummaryRow(origin_authority=self.authority)
                session.add(own)
            own.version, own.issued_at, own.expires_at = version, now, summary.expires_at
            own.envelope, own.received_at = envelope, now
        return envelope

    async def own_summary(self) -> dict[str, Any]:
        """The latest own summary envelope, or a fresh one when none is valid for another half TTL."""
        async with self.sessions() as session:
            own = await session.get(CapacitySummaryRow, self.authority)
        if own is not None and own.expires_at - self.clock() > self.settings.federation_summary_ttl_seconds // 2:
            return dict(own.envelope)
        return await self.build_summary()

    async def publish_summary(self) -> dict[str, str]:
        """Build a new summary and POST it to every active peer concurrently; outcome per peer."""
        envelope = await self.build_summary()
        peers = await self.peers()

        async def one(peer: PeerIdentity) -> tuple[str, str]:
            msg = self.client.build(peer, "capacity_summary", {"summary": envelope})
            try:
                await self.client.send(peer, "/v1/federation/summaries", msg)
            except (PeerUnavailableError, PeerRefusedError) as exc:
                await self._mark_peer(peer.authority, ok=False, error=exc.message)
                return peer.authority, f"error: {exc.message}"
            await self._mark_peer(peer.authority, ok=True)
            return peer.authority, "delivered"

        return dict(await asyncio.gather(*(one(p) for p in peers)))

    async def accept_summary(self, peer: PeerIdentity, envelope: Any) -> CapacitySummary:
        """Keep `envelope` as `peer`'s latest summary if signed by it, newer and unexpired (else raise)."""
        now = self.clock()
        async with self.sessions.begin() as session:
            row = await session.get(CapacitySummaryRow, peer.authority)
            summary = verify_summary(envelope, peer, now=now, last_version=None if row is None else row.version)
            if row is None:
                row = CapacitySummaryRow(origin_authority=peer.authority)
                session.add(row)
            row.version, row.issued_at, row.expires_at = summary.version, summary.issued_at, summary.expires_at
            row.envelope, row.received_at = envelope, now
        self._forward_wanted.set()
        return summary

    async def receive_summary(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Inbound capacity_summary: accepted or refused (unsigned, wrongly signed, stale, expired: logged)."""
        body = _parse(SummaryBody, v.body)
        try:
            summary = await self.accept_summary(v.peer, body.summary)
        except SummaryError as exc:
            await self.record_event("refused_summary", v.peer.authority, {"reason": exc.details.get("reason")})
            raise
        except StaleSummaryError:
            log.debug("stale summary from %s (already have a newer one)", v.peer.authority)
            raise
        return {"status": "accepted", "origin": summary.origin_authority, "version": summary.version}

    async def summaries_view(self) -> list[dict[str, Any]]:
        """Every kept summary (own included) with its classes and whether it is still fresh."""
        now = self.clock()
        async with self.sessions() as session:
            rows = (
                await session.scalars(select(CapacitySummaryRow).order_by(CapacitySummaryRow.origin_authority))
            ).all()
        out = []
        for r in rows:
            summary = CapacitySummary.from_json(envelope_json(r.envelope))
            out.append(
                {
                    "origin": r.origin_authority,
                    "self": r.origin_authority == self.authority,
                    "version": r.version,
                    "issued_at": r.issued_at,
                    "expires_at": r.expires_at,
                    "received_at": r.received_at,
                    "fresh": r.expires_at > now,
                    "classes": [c.to_json() for c in summary.classes],
                    "envelope": r.envelope,
                }
            )
        return out

    async def _fresh_summaries(self, session: AsyncSession) -> list[tuple[PeerIdentity, CapacitySummary]]:
        now = self.clock()
        peers = {r.authority: r for r in await self._peer_rows(session)}
        rows = (
            await session.scalars(
                select(CapacitySummaryRow).where(
                    CapacitySummaryRow.expires_at > now, CapacitySummaryRow.origin_authority != self.authority
                )
            )
        ).all()
        out = []
        for r in rows:
            peer = peers.get(r.origin_authority)
            if peer is None or peer.log_status == "inconsistent":
                continue
            out.append((_peer_identity(peer), CapacitySummary.from_json(envelope_json(r.envelope))))
        return out

    # ------------------------------------------------------------------------------------------ buyer side

    async def _shortfall_in(
        self,
        session: AsyncSession,
        terms: Mapping[str, Any],
        start: int,
        end: int,
        need: int,
        cache: dict[tuple[int, int], list[Tranche]] | None = None,
    ) -> bool:
        """True when local free capacity cannot fill `need` devices of an order now. `cache` shares one
        capacity read per span across a pass over many orders (filters applied in memory)."""
        need_min = need if terms["all_or_nothing"] else 1
        if cache is None:
            tranches = await free_tranches(
                session,
                start=start,
                end=end,
                now=self.clock(),
                heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
                models=terms["models"],
                regions=terms["regions"],
            )
        else:
            if (start, end) not in cache:
                cache[(start, end)] = await free_tranches(
                    session,
                    start=start,
                    end=end,
                    now=self.clock(),
                    heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
                )
            tranches = cache[(start, end)]
        picks = choose(
            tranches,
            devices_max=need,
            devices_min=need_min,
            limits=terms["limits"],
            models=terms["models"],
            regions=terms["regions"],
            billing_mode=terms["billing_mode"],
            duration=end - start,
        )
        return not picks

    def _check_line(
        self, line: Mapping[str, Any], peer: PeerIdentity, order: Order, terms: Mapping[str, Any], start: int, end: int
    ) -> None:
        """A held line must be the contract we asked for: our order, our authority, allowed model/region, price."""
        b = line.get("body") or {}
        problems = []
        if b.get("buyer_authority") != self.authority or b.get("owner_authority") != peer.authority:
            problems.append("authorities")
        if b.get("order_id") != order.id or b.get("contract_id") != line.get("contract_id"):
            problems.append("ids")
        if b.get("start_at") != start or b.get("end_at") != end:
            problems.append("span")
        if terms["models"] is not None and b.get("model") not in terms["models"]:
            problems.append("model")
        if terms["regions"] is not None and b.get("region") not in terms["regions"]:
            problems.append("region")
        limit = limit_for(terms["limits"], str(b.get("model")))
        if limit is None or int(b.get("buyer_price_fen", 1 << 60)) > limit:
            problems.append("price")
        if int(b.get("devices", 0)) != int(line.get("devices", -1)) or int(b.get("devices", 0)) < 1:
            problems.append("devices")
        if problems:
            raise ValidationError(f"held line breaks the order: {', '.join(problems)}", field="lines")

    async def forward_order(
        self, order_id: str, plan: Sequence[tuple[str, int, str, str]] | None = None
    ) -> dict[str, Any]:
        """Offer an open local order to peers whose summaries could fill it; commit the holds if they add up
        to what the order needs (all-or-nothing honoured across peers), else release them all. With a hub's
        `plan` ((owner, devices, model, region), ...: exchange.services.hub), exactly those owners are asked
        for exactly those devices of those classes, each all or nothing."""
        t0 = time.perf_counter()
        now = self.clock()
        async with self.sessions() as session:
            order = await session.get(Order, order_id)
            if order is None:
                raise NotFoundError(f"no order {order_id}", field="order_id")
            in_flight = await session.scalar(
                select(func.count()).where(OutboundHold.order_id == order_id, OutboundHold.status.in_(IN_FLIGHT))
            )
            summaries = await self._fresh_summaries(session)
        if order.status not in OPEN_ORDER or order.quantity_devices is None or in_flight:
            return {"status": "skipped"}
        terms = _order_terms(order)
        remaining = order.quantity_devices - order.filled_devices
        if remaining <= 0:
            return {"status": "skipped"}
        start = max(now, int(terms["start_earliest"] or now))
        end = start + terms["duration"]
        if terms["all_or_nothing"]:
            need_min = remaining
        else:
            need_min = max(1, int(terms["min_fill_devices"] or 1) - order.filled_devices)
        candidates = []
        for peer, summary in summaries:
            if plan is None and summary.fillable(terms["models"], terms["regions"], terms["limits"]) > 0:
                best = summary.best_ask(terms["models"], terms["regions"])
                candidates.append((best if best is not None else 1 << 62, peer.authority, peer))
        candidates.sort(key=lambda c: (c[0], c[1]))
        planned: dict[str, tuple[int, list[str], list[str]]] = {}
        if plan is not None:
            known = {p.authority: p for p in await self.peers()}
            for owner, n, model, region in plan:
                if owner not in known:
                    continue
                if owner not in planned:
                    candidates.append((0, owner, known[owner]))
                had, ms, rs = planned.get(owner, (0, [], []))
                planned[owner] = (had + n, sorted({*ms, model}), sorted({*rs, region}))
        if not candidates:
            return {"status": "no_peer"}
        # a shaped order (pool cap, one model, one site/region) is placed by one owner: each is asked for all
        # of it, and the first hold ends the search (shapes are not split across exchanges)
        shaped = _shape_fields(terms)
        self.orders_forwarded += 1
        held: list[HeldAtPeer] = []
        total = 0
        for _ask, _auth, peer in candidates:
            if total >= remaining:
                break
            want = remaining - total
            models, regions, floor = terms["models"], terms["regions"], need_min if shaped else 1
            if peer.authority in planned:
                want, models, regions = planned[peer.authority]
                floor = want
            msg = self.client.build(
                peer,
                "order_offer",
                {
                    "order": {
                        "origin_order_id": order.id,
                        "buyer_id": order.buyer_id,
                        "models": models,
                        "regions": regions,
                        "limits": terms["limits"],
                        "billing_mode": terms["billing_mode"],
                        "devices_max": want,
                        "devices_min": floor,
                        "start_at": start,
                        "end_at": end,
                        **shaped,
                    }
                },
            )
            async with self.sessions.begin() as session:
                if not held and not await self._claim(session, order):
                    return {"status": "skipped"}  # filled or forwarded meanwhile (local fill, another process)
                session.add(
                    OutboundHold(
                        id=msg["message_id"],
                        order_id=order.id,
                        peer_authority=peer.authority,
                        status="requested",
                        devices=0,
                        created_at=self.clock(),
                    )
                )
            try:
                resp = await self.client.send(peer, "/v1/federation/orders", msg)
            except (PeerUnavailableError, PeerRefusedError) as exc:
                await self._set_outbound(msg["message_id"], status="failed", error=exc.message)
                await self._mark_peer(peer.authority, ok=False, error=exc.message)
                continue
            if resp.get("status") != "held":
                why = str(resp.get("reason")) + (f" ({resp['field']})" if resp.get("field") else "")
                await self._set_outbound(msg["message_id"], status="refused", error=why)
                continue
            try:
                lines = list(resp.get("lines") or [])
                for line in lines:
                    self._check_line(line, peer, order, terms, start, end)
                _check_shape(lines, terms)
                devices = sum(int(line["devices"]) for line in lines)
                if devices > want or devices != int(resp.get("devices", -1)):
                    raise ValidationError("held more devices than asked", field="devices")
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                await self._release(msg["message_id"], peer, str(resp.get("hold_id")))
                await self.record_event("bad_hold", peer.authority, {"order_id": order.id, "error": str(exc)})
                continue
            # kept in memory until commit: the row stays `requested` (a crash here leaves it to the reconciler,
            # and the owner's hold expires), which spares a write per hold
            held.append(
                HeldAtPeer(msg["message_id"], order.id, peer, str(resp["hold_id"]), lines, devices,
                           int(resp.get("expires_at", 0)))
            )  # fmt: skip
            total += devices
            if shaped:
                break
        if total < need_min:
            for h in held:
                await self._release(h.outbound_id, h.peer, h.remote_hold_id)
            return {"status": "unfilled", "held": total, "needed": need_min}
        if self.settings.federation_commit_delay_seconds > 0:  # fault injection: widen the hold-to-commit gap
            await asyncio.sleep(self.settings.federation_commit_delay_seconds)
        committed = 0
        for h in held:
            committed += await self.commit_outbound(h.outbound_id, h)
        if committed:
            self.orders_committed += 1
            self.forward_latency_ms.append((time.perf_counter() - t0) * 1000.0)
        return {"status": "committed" if committed else "pending", "devices": committed, "holds": len(held)}

    async def _claim(self, session: AsyncSession, order: Order) -> bool:
        """In the caller's write transaction: the order is still as read (open, same fill, nothing in flight),
        so the outbound row written next makes this forwarder its only seller (local fill skips it)."""
        await lock_capacity(session)
        fresh = await session.get(Order, order.id, populate_existing=True)
        if fresh is None or fresh.status not in OPEN_ORDER or fresh.filled_devices != order.filled_devices:
            return False
        in_flight = await session.scalar(
            select(func.count()).where(OutboundHold.order_id == order.id, OutboundHold.status.in_(IN_FLIGHT))
        )
        return not in_flight

    async def _set_outbound(self, outbound_id: str, **values: Any) -> None:
        values["updated_at"] = self.clock()
        async with self.sessions.begin() as session:
            await session.execute(update(OutboundHold).where(OutboundHold.id == outbound_id).values(**values))

    async def _release(self, outbound_id: str, peer: PeerIdentity, remote_hold_id: str) -> None:
        """Ask the owner to release a hold (best effort: an unreleased hold expires on its own)."""
        msg = self.client.build(peer, "hold_release", {"hold_id": remote_hold_id})
        try:
            await self.client.send(peer, f"/v1/federation/holds/{remote_hold_id}/release", msg)
        except (PeerUnavailableError, PeerRefusedError) as exc:
            log.info("release of hold %s at %s failed (%s); it will expire", remote_hold_id, peer.authority, exc)
        await self._set_outbound(outbound_id, status="released", remote_hold_id=remote_hold_id)

    async def commit_outbound(self, outbound_id: str, held: HeldAtPeer | None = None) -> int:
        """Sign the held contracts and commit them at the owner (idempotent: retried with the same message id
        until the owner answers); on success append the two-signature contracts to this log. Devices won.
        `held` is the fresh hold from forward_order; without it (a retry) the `committing` row is read."""
        if outbound_id in self._committing:
            return 0
        self._committing.add(outbound_id)
        try:
            return await self._commit_outbound(outbound_id, held)
        finally:
            self._committing.discard(outbound_id)

    async def _commit_outbound(self, outbound_id: str, held: HeldAtPeer | None) -> int:
        message_id = new_id_str()
        if held is not None:
            async with self.sessions.begin() as session:
                moved = await session.execute(
                    update(OutboundHold)
                    .where(OutboundHold.id == outbound_id, OutboundHold.status == "requested")
                    .values(
                        status="committing",
                        remote_hold_id=held.remote_hold_id,
                        lines=held.lines,
                        devices=held.devices,
                        expires_at=held.expires_at,
                        commit_message_id=message_id,
                        updated_at=self.clock(),
                    )
                )
            if getattr(moved, "rowcount", 0) != 1:
                return 0  # the reconciler gave up on it meanwhile; the owner's hold expires
            peer, order_id, lines, remote_hold_id = held.peer, held.order_id, held.lines, held.remote_hold_id
        else:
            async with self.sessions() as session:
                row = await session.get(OutboundHold, outbound_id)
                if row is None or row.status != "committing" or row.remote_hold_id is None:
                    return 0
                peer_row = await session.get(Peer, row.peer_authority)
            assert peer_row is not None
            peer, order_id, lines, remote_hold_id = (
                _peer_identity(peer_row), row.order_id, list(row.lines or []), row.remote_hold_id
            )  # fmt: skip
            message_id = row.commit_message_id or message_id
        me = self.me
        envelopes = [sign_contract(line["body"], me) for line in lines]
        msg = self.client.build(
            peer, "hold_commit", {"hold_id": remote_hold_id, "contracts": envelopes}, message_id=message_id
        )
        try:
            resp = await self.client.send(peer, f"/v1/federation/holds/{remote_hold_id}/commit", msg)
        except PeerUnavailableError as exc:
            await self._mark_peer(peer.authority, ok=False, error=exc.message)
            return 0  # stays `committing`: resync retries with the same message id
        except PeerRefusedError as exc:
            await self._set_outbound(outbound_id, status="failed", error=exc.message)
            return 0
        if resp.get("status") != "committed":
            await self._set_outbound(outbound_id, status="failed", error=str(resp.get("reason")))
            return 0
        by_id = {line["contract_id"]: line["body"] for line in lines}
        returned = list(resp.get("contracts") or [])
        now = self.clock()
        try:
            checked = []
            for item in returned:
                body = verify_contract(item["envelope"], peer, me.identity)
                if by_id.get(str(item.get("contract_id"))) != body:
                    raise ValidationError("committed contract differs from the held one", field="contracts")
                checked.append((body, item["envelope"]))
            if len(checked) != len(lines):
                raise ValidationError("owner did not return every held contract", field="contracts")
        except (AuthenticationError, ValidationError, KeyError, TypeError) as exc:
            await self._set_outbound(outbound_id, status="failed", error=f"bad commit answer: {exc}")
            await self.record_event("bad_commit", peer.authority, {"outbound": outbound_id, "error": str(exc)})
            return 0
        devices = 0
        async with self.sessions.begin() as session:
            current = await session.get(OutboundHold, outbound_id)
            if current is None or current.status == "committed":
                return 0
            for body, env in checked:
                if await session.get(PeerContract, body["contract_id"]) is not None:
                    continue
                appended = await self.ledger.append_signed(session, "contract", body["contract_id"], env)
                session.add(self._peer_contract("buyer", peer.authority, order_id, body, appended, now))
                devices += int(body["devices"])
            fresh = await session.get(Order, order_id)
            assert fresh is not None
            fresh.filled_devices = (fresh.filled_devices or 0) + devices
            if fresh.quantity_devices is not None:
                fresh.status = "filled" if fresh.filled_devices >= fresh.quantity_devices else "partially_filled"
            fresh.updated_at = now
            current.status = "committed"
            current.updated_at = now
        await self._mark_peer(peer.authority, ok=True)
        return devices

    async def reconcile_outbound(self) -> dict[str, int]:
        """Retry commits left `committing` (peer was down), and give up on requests/holds a crash left behind."""
        now = self.clock()
        stale_request = now - 2 * int(self.settings.federation_peer_timeout_seconds) - 2
        async with self.sessions.begin() as session:
            r1 = await session.execute(
                update(OutboundHold)
                .where(OutboundHold.status == "requested", OutboundHold.created_at < stale_request)
                .values(status="failed", error="no answer (abandoned)", updated_at=now)
            )
            r2 = await session.execute(
                update(OutboundHold)
                .where(OutboundHold.status == "held", OutboundHold.expires_at < now - 1)
                .values(status="failed", error="hold expired before commit", updated_at=now)
            )
            committing = (
                await session.scalars(select(OutboundHold.id).where(OutboundHold.status == "committing"))
            ).all()
        retried = 0
        for outbound_id in committing:
            if outbound_id in self._committing:
                continue  # this process is committing it right now
            retried += 1 if await self.commit_outbound(outbound_id) else 0
        return {
            "abandoned": int(getattr(r1, "rowcount", 0) or 0) + int(getattr(r2, "rowcount", 0) or 0),
            "committed_on_retry": retried,
        }

    async def forward_open_orders(self, order_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Hook for rounds (after a local round, pass the still-open order ids) and the background tick:
        forward orders the local market cannot fill now, or that stayed open longer than forward_after."""
        async with self._forward_lock:
            now = self.clock()
            mono = time.monotonic()
            async with self.sessions() as session:
                stmt = select(Order).where(Order.status.in_(OPEN_ORDER), Order.quantity_devices.is_not(None))
                if order_ids is not None:
                    stmt = stmt.where(Order.id.in_(list(order_ids)))
                orders = (await session.scalars(stmt.order_by(Order.created_at, Order.id).limit(200))).all()
            due = []
            spans: dict[tuple[int, int], list[Tranche]] = {}
            async with self.sessions() as shortfall_session:  # one read pass for the local-capacity checks
                for order in orders:
                    if self._next_try.get(order.id, 0.0) > mono:
                        continue
                    terms = _order_terms(order)
                    remaining = order.quantity_devices - order.filled_devices if order.quantity_devices else 0
                    start = max(now, int(terms["start_earliest"] or now))
                    end = start + terms["duration"]
                    aged = now - order.created_at >= self.settings.federation_forward_after_seconds
                    if (
                        order_ids is None
                        and not aged
                        and not await self._shortfall_in(shortfall_session, terms, start, end, remaining, spans)
                    ):
                        continue
                    due.append(order.id)
            gate = asyncio.Semaphore(FORWARD_CONCURRENCY)

            async def one(order_id: str) -> dict[str, Any]:
                async with gate:
                    try:
                        outcome = await self.forward_order(order_id)
                    except HetexError as exc:
                        outcome = {"status": "error", "error": exc.message}
                if outcome["status"] != "committed":
                    self._next_try[order_id] = mono + max(1.0, self.settings.federation_forward_interval_seconds)
                else:
                    self._next_try.pop(order_id, None)
                return {"order_id": order_id, **outcome}

            return list(await asyncio.gather(*(one(oid) for oid in due)))

    # ------------------------------------------------------------------------------------------ contracts

    async def contracts_view(self, peer: str | None = None, order_id: str | None = None) -> list[dict[str, Any]]:
        """Cross-exchange contracts known here (both sides), oldest first."""
        async with self.sessions() as session:
            stmt = select(PeerContract).order_by(PeerContract.created_at, PeerContract.contract_id)
            if peer:
                stmt = stmt.where(PeerContract.peer_authority == peer)
            if order_id:
                stmt = stmt.where(PeerContract.order_id == order_id)
            rows = (await session.scalars(stmt)).all()
        return [
            {
                "contract_id": r.contract_id,
                "side": r.side,
                "peer": r.peer_authority,
                "order_id": r.order_id,
                "hold_id": r.hold_id,
                "pool_cri": r.pool_cri,
                "model": r.model,
                "region": r.region,
                "devices": r.devices,
                "start_at": r.start_at,
                "end_at": r.end_at,
                "price_fen": r.price_fen,
                "log_index": r.log_index,
                "signatures": [s.get("keyid") for s in r.envelope.get("signatures", [])],
                "envelope": r.envelope,
            }
            for r in rows
        ]

    # ------------------------------------------------------------------------------------------ mirroring

    async def enqueue_mirror(
        self, session: AsyncSession, contract_id: str, record_type: str, record_id: str, envelope: Mapping[str, Any]
    ) -> bool:
        """Hook for usage/settlement (in the caller's transaction, after it appended the record here): queue the
        signed record for the buyer's exchange when `contract_id` is a cross-exchange contract owned here."""
        if record_type not in MIRRORABLE:
            raise ValidationError(f"record_type must be one of {sorted(MIRRORABLE)}", field="record_type")
        pc = await session.get(PeerContract, contract_id)
        if pc is None or pc.side != "owner":
            return False
        item = {
            "record_type": record_type,
            "record_id": record_id,
            "contract_id": contract_id,
            "envelope": dict(envelope),
        }
        session.add(
            FederationOutbox(
                id=new_id_str(),
                peer_authority=pc.peer_authority,
                msg_type="mirror",
                path="/v1/federation/mirror",
                body={"records": [item]},
                status="pending",
                attempts=0,
                next_attempt_at=self.clock(),
                created_at=self.clock(),
            )
        )
        return True

    async def deliver_outbox(self, limit: int = 50) -> dict[str, int]:
        """Send due outbox messages (each with its row id as message id, so retries are idempotent)."""
        now = self.clock()
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(FederationOutbox)
                    .where(FederationOutbox.status == "pending", FederationOutbox.next_attempt_at <= now)
                    .order_by(FederationOutbox.created_at, FederationOutbox.id)
                    .limit(limit)
                )
            ).all()
            peers = {r.authority: _peer_identity(r) for r in await self._peer_rows(session)}
        sent = failed = 0
        for row in rows:
            peer = peers.get(row.peer_authority)
            if peer is None:
                continue
            msg = self.client.build(peer, row.msg_type, row.body, message_id=row.id)
            values: dict[str, Any]
            try:
                await self.client.send(peer, row.path, msg)
                values = {"status": "sent", "sent_at": self.clock(), "attempts": row.attempts + 1}
                sent += 1
            except (PeerUnavailableError, PeerRefusedError) as exc:
                delay = min(60, 2 ** min(row.attempts, 6))
                values = {
                    "attempts": row.attempts + 1,
                    "next_attempt_at": self.clock() + delay,
                    "last_error": exc.message[:500],
                }
                failed += 1
            async with self.sessions.begin() as session:
                await session.execute(update(FederationOutbox).where(FederationOutbox.id == row.id).values(**values))
        return {"sent": sent, "failed": failed}

    async def receive_mirror(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Buyer side of mirror: records of our cross-exchange contracts, signed by the owner, appended here
        (countersigned by this exchange) so both logs and exports show them."""
        body = _parse(MirrorBody, v.body)
        now = self.clock()
        ring = v.peer.keyring()
        async with self.sessions.begin() as session:
            stored = await self._replay(session, v)
            if stored is not None:
                return stored
            out = []
            for i, item in enumerate(body.records):
                if item.record_type not in MIRRORABLE:
                    raise ValidationError(
                        f"records[{i}].record_type must be usage or settlement", field=f"records[{i}]"
                    )
                pc = await session.get(PeerContract, item.contract_id)
                if pc is None or pc.side != "buyer" or pc.peer_authority != v.peer.authority:
                    raise ValidationError(
                        f"records[{i}]: contract {item.contract_id} is not a contract with {v.peer.authority}",
                        field=f"records[{i}].contract_id",
                    )
                try:
                    payload = verify_envelope(item.envelope, ring, payload_type=record_payload_type(item.record_type))
                except EnvelopeError as exc:
                    raise ValidationError(
                        f"records[{i}]: not signed by {v.peer.authority}: {exc.message}", field=f"records[{i}].envelope"
                    ) from None
                data = json.loads(payload)
                if isinstance(data, dict) and data.get("contract_id") not in (None, item.contract_id):
                    raise ValidationError(f"records[{i}]: envelope names another contract", field=f"records[{i}]")
                existing = await session.get(MirroredRecord, item.record_id)
                if existing is not None:
                    out.append({"record_id": item.record_id, "log_index": existing.log_index})
                    continue
                appended = await self.ledger.append_signed(session, item.record_type, item.record_id, item.envelope)
                session.add(
                    MirroredRecord(
                        record_id=item.record_id,
                        peer_authority=v.peer.authority,
                        record_type=item.record_type,
                        contract_id=item.contract_id,
                        envelope=appended.envelope,
                        log_index=appended.index,
                        created_at=now,
                    )
                )
                out.append({"record_id": item.record_id, "log_index": appended.index})
            response = {"status": "mirrored", "records": out}
            self._store(session, v, response)
        return response

    async def mirrored_view(self, contract_id: str | None = None, *, peer: str | None = None) -> list[dict[str, Any]]:
        """Mirrored records kept here, optionally only those mirrored by `peer`."""
        async with self.sessions() as session:
            stmt = select(MirroredRecord).order_by(MirroredRecord.created_at, MirroredRecord.record_id)
            if contract_id:
                stmt = stmt.where(MirroredRecord.contract_id == contract_id)
            if peer:
                stmt = stmt.where(MirroredRecord.peer_authority == peer)
            rows = (await session.scalars(stmt)).all()
        return [
            {
                "record_id": r.record_id,
                "record_type": r.record_type,
                "contract_id": r.contract_id,
                "peer": r.peer_authority,
                "log_index": r.log_index,
                "envelope": r.envelope,
            }
            for r in rows
        ]

    # ------------------------------------------------------------------------------------------ resync

    async def own_checkpoint(self) -> dict[str, Any]:
        """This exchange's latest signed checkpoint (signing one first if the log grew)."""
        cp = await self.ledger.checkpoint()
        return {"origin": self.settings.origin, "size": cp.size, "root": _b64(cp.root), "note": cp.note}

    async def own_consistency(self, size1: int, size2: int) -> dict[str, Any]:
        """Consistency proof between two sizes of this exchange's log."""
        proof = await self.ledger.consistency_proof(size1, size2)
        return {
            "size1": proof.size1,
            "size2": proof.size2,
            "hashes": [_b64(h) for h in proof.hashes],
            "root1": _b64(proof.root1),
            "root2": _b64(proof.root2),
        }

    async def check_peer_log(self, peer: PeerIdentity) -> dict[str, Any]:
        """Fetch the peer's checkpoint, verify its signature and its consistency with the last one we kept
        (RFC 9162 proof fetched from the peer); a rewritten log is marked `inconsistent` and reported."""
        cp_json = await self.client.get(peer, "/v1/federation/checkpoint")
        try:
            cp = verify_checkpoint(
                str(cp_json["note"]), [NoteVerifier(peer.origin, peer.public_key)], origin=peer.origin
            )
        except (NoteError, KeyError, TypeError) as exc:
            return await self._log_problem(peer, f"checkpoint signature refused: {exc}", None)
        async with self.sessions() as session:
            last = await session.scalar(
                select(PeerCheckpoint)
                .where(PeerCheckpoint.peer_authority == peer.authority, PeerCheckpoint.consistent.is_(True))
                .order_by(PeerCheckpoint.size.desc())
                .limit(1)
            )
            row = await session.get(Peer, peer.authority)
        if row is not None and row.log_status == "inconsistent":
            return {"status": "inconsistent", "size": cp.size, "problem": row.log_problem}
        if last is not None:
            if cp.size < last.size:
                return await self._log_problem(peer, f"log shrank from {last.size} to {cp.size}", cp_json)
            if cp.size == last.size and cp.root != last.root:
                return await self._log_problem(peer, f"root at size {cp.size} changed", cp_json)
            if cp.size > last.size and last.size > 0:
                proof = await self.client.get(peer, f"/v1/federation/consistency?from={last.size}&to={cp.size}")
                try:
                    hashes = [base64.b64decode(h) for h in proof["hashes"]]
                    verify_consistency(last.size, cp.size, hashes, last.root, cp.root)
                except (ProofError, KeyError, TypeError, ValueError) as exc:
                    return await self._log_problem(
                        peer, f"checkpoint {cp.size} is not consistent with {last.size}: {exc}", cp_json
                    )
        async with self.sessions.begin() as session:
            if (last is None or cp.size != last.size) and await session.get(
                PeerCheckpoint, (peer.authority, cp.size)
            ) is None:
                session.add(
                    PeerCheckpoint(
                        peer_authority=peer.authority,
                        size=cp.size,
                        root=cp.root,
                        note=str(cp_json["note"]),
                        consistent=True,
                        created_at=self.clock(),
                    )
                )
            await session.execute(update(Peer).where(Peer.authority == peer.authority).values(log_status="consistent"))
        return {"status": "consistent", "size": cp.size}

    async def _log_problem(self, peer: PeerIdentity, problem: str, cp_json: Any) -> dict[str, Any]:
        async with self.sessions.begin() as session:
            await session.execute(
                update(Peer)
                .where(Peer.authority == peer.authority)
                .values(log_status="inconsistent", log_problem=problem[:1000])
            )
        note = cp_json.get("note") if isinstance(cp_json, dict) else None
        await self.record_event("log_inconsistent", peer.authority, {"problem": problem, "note": note})
        return {"status": "inconsistent", "problem": problem}

    async def sync_peer(self, peer: PeerIdentity) -> dict[str, Any]:
        """Resync with one peer: its log (checkpoint + consistency), its summary, our pending commits to it."""
        out: dict[str, Any] = {"peer": peer.authority}
        try:
            out["log"] = await self.check_peer_log(peer)
            envelope = await self.client.get(peer, "/v1/federation/summary")
            try:
                out["summary"] = (await self.accept_summary(peer, envelope)).version
            except StaleSummaryError:
                out["summary"] = "unchanged"
            except SummaryError as exc:
                out["summary"] = f"refused: {exc.details.get('reason')}"
                await self.record_event("refused_summary", peer.authority, {"reason": exc.details.get("reason")})
        except (PeerUnavailableError, PeerRefusedError) as exc:
            await self._mark_peer(peer.authority, ok=False, error=exc.message)
            out["error"] = exc.message
            return out
        await self._mark_peer(peer.authority, ok=True, synced=True)
        return out

    async def sync_all(self) -> list[dict[str, Any]]:
        """Resync every peer concurrently, then retry pending commits."""
        results = list(await asyncio.gather(*(self.sync_peer(p) for p in await self.peers())))
        await self.reconcile_outbound()
        return results

    # ------------------------------------------------------------------------------------------ stats, loops

    def stats(self) -> dict[str, Any]:
        """Messages sent by type, orders forwarded/committed, and forward latency percentiles (ms)."""
        lat = sorted(self.forward_latency_ms)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

        return {
            "messages_sent": dict(self.client.sent),
            "orders_forwarded": self.orders_forwarded,
            "orders_committed": self.orders_committed,
            "refused_messages": dict(sorted(self.refusals.counts.items())),
            "forward_latency_samples_ms": [round(x, 2) for x in list(self.forward_latency_ms)[-1000:]],
            "forward_latency_ms": {
                "count": len(lat),
                "p50": pct(0.50),
                "p99": pct(0.99),
                "max": lat[-1] if lat else None,
            },
        }

    async def _loop(
        self, name: str, interval: float, step: Callable[[], Awaitable[Any]], wake: asyncio.Event | None
    ) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("federation %s failed; retrying in %s s", name, interval)
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=interval)
                wake.clear()

    async def _forward_tick(self) -> None:
        if not self.settings.federation_hub:  # a member of a hub forwards only what the hub routes
            await self.forward_open_orders()
        await self.deliver_outbox()

    async def _publish_tick(self) -> None:
        await self.publish_summary()
        # on demand publication is rate limited: triggers during this pause coalesce into one publication
        await asyncio.sleep(SUMMARY_MIN_GAP_SECONDS)

    def background_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The loops `hetex serve` runs (each interval 0 disables its loop)."""
        s = self.settings
        loops: list[Coroutine[Any, Any, None]] = []
        if s.federation_summary_interval_seconds > 0:
            loops.append(
                self._loop("summary", s.federation_summary_interval_seconds, self._publish_tick, self._publish_wanted)
            )
        if s.federation_sync_interval_seconds > 0:
            loops.append(self._loop("sync", s.federation_sync_interval_seconds, self.sync_all, None))
        if s.federation_forward_interval_seconds > 0:
            loops.append(
                self._loop("forward", s.federation_forward_interval_seconds, self._forward_tick, self._forward_wanted)
            )
        if s.federation_sweep_interval_seconds > 0:
            loops.append(self._loop("sweep", s.federation_sweep_interval_seconds, self._sweep_tick, None))
        return loops

    async def _sweep_tick(self) -> None:
        await self.expire_holds()
        await purge_peer_nonces(self.sessions, self.clock())

    def request_forward(self) -> None:
        """Wake the forwarder now (e.g. a new order arrived or a round ended with open orders)."""
        self._forward_wanted.set()

    async def close(self) -> None:
        """Close the peer HTTP session."""
        await self.client.close()


def _peek_keyid(headers: Sequence[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "signature-input":
            marker = 'keyid="'
            i = value.find(marker)
            if i >= 0:
                j = value.find('"', i + len(marker))
                return value[i + len(marker) : j][:64] if j > i else None
    return None


async def purge_peer_nonces(sessions: async_sessionmaker[AsyncSession], now: int) -> None:
    """Forget expired peer nonces (their signatures can no longer be accepted)."""
    async with sessions.begin() as session:
        await session.execute(
            delete(SeenNonce).where(SeenNonce.key_id.like(PEER_NONCE_PREFIX + "%"), SeenNonce.expires_at < now)
        )
