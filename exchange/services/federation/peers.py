"""The peer directory: which exchanges this one trusts, their keys, reachability and how to reach them."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, update

from exchange.services.federation.context import (
    FederationContext,
    UnknownAuthorityError,
    UnknownPeerError,
    b64,
    log,
    peer_identity,
    peer_rows,
)
from exchange.storage.federation import CapacitySummaryRow, Peer, PeerCheckpoint, PeerLogEvidence
from exchange.storage.participants import Participant
from federation.errors import KeyFormatError
from federation.keys import Keyring, VerifyKey, parse_verifier_key
from federation.peering import PeerIdentity, check_authority
from identifiers.cri import parse_cri
from identifiers.errors import ValidationError
from identifiers.ids import new_id_str

PEER_MARK_REFRESH_SECONDS = 5
PEER_CACHE_SECONDS = 1.0


class PeerDirectory:
    """Adds and lists peers, records their reachability, resolves CRIs they own."""

    def __init__(self, ctx: FederationContext) -> None:
        self.ctx = ctx
        self._marks: dict[str, tuple[bool, int]] = {}
        self._cache: tuple[float, dict[str, PeerIdentity]] | None = None

    async def add_peer(self, url: str, key: str, authority: str, origin: str | None = None) -> dict[str, Any]:
        """Trust another exchange: its URL, its exchange key (base64, or a C2SP verifier key string naming
        its origin) and its authority code. Re-adding an authority updates it and clears its log status."""
        check_authority(authority)
        if authority == self.ctx.authority:
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
        now = self.ctx.clock()
        async with self.ctx.sessions.begin() as session:
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
                    created_at=now,
                )
                session.add(participant)
                await session.flush()
            row = await session.get(Peer, authority)
            if row is None:
                row = Peer(authority=authority, created_at=now)
                session.add(row)
            row.url = identity.url or url
            row.origin = name
            row.public_key = public.to_base64()
            row.key_id = identity.key_id
            row.participant_id = participant.id
            row.status = "active"
            row.log_status = "unknown"
            row.log_problem = None
            await session.execute(  # the operator chose to trust it afresh: open evidence is closed, not lost
                update(PeerLogEvidence)
                .where(PeerLogEvidence.peer_authority == authority, PeerLogEvidence.resolution.is_(None))
                .values(resolution="re_added", resolved_at=now)
            )
            await session.flush()
            view = self.peer_view(row, None, None)
        self._cache = None
        log.info("peer %s added at %s (key %s)", authority, url, identity.key_id)
        self.ctx.publish_wanted.set()
        return view

    async def peer(self, authority: str) -> PeerIdentity:
        """A known active peer's identity."""
        async with self.ctx.sessions() as session:
            row = await session.get(Peer, authority)
        if row is None or row.status != "active":
            raise UnknownPeerError(f"no peer {authority}", field="authority")
        return peer_identity(row)

    async def peers(self) -> list[PeerIdentity]:
        """Every active peer."""
        async with self.ctx.sessions() as session:
            return [peer_identity(r) for r in await peer_rows(session)]

    async def flagged(self) -> set[str]:
        """Active peers whose log is flagged `inconsistent` (not traded with until re-verified)."""
        async with self.ctx.sessions() as session:
            return {r.authority for r in await peer_rows(session) if r.log_status == "inconsistent"}

    async def by_key_id(self) -> dict[str, PeerIdentity]:
        """Active peers by key id, cached for a second (one query less per inbound message)."""
        cached = self._cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.ctx.sessions() as session:
            peers = {r.key_id: peer_identity(r) for r in await peer_rows(session)}
        self._cache = (time.monotonic() + PEER_CACHE_SECONDS, peers)
        return peers

    def peer_view(self, row: Peer, cp: PeerCheckpoint | None, summary: CapacitySummaryRow | None) -> dict[str, Any]:
        """One peer as the operator sees it."""
        now = self.ctx.clock()
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
            else {"size": cp.size, "root": b64(cp.root), "consistent": cp.consistent, "at": cp.created_at},
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
        async with self.ctx.sessions() as session:
            rows = await peer_rows(session, active_only=False)
            out = []
            for row in rows:
                cp = await session.scalar(
                    select(PeerCheckpoint)
                    .where(PeerCheckpoint.peer_authority == row.authority)
                    .order_by(PeerCheckpoint.size.desc())
                    .limit(1)
                )
                summary = await session.get(CapacitySummaryRow, row.authority)
                out.append(self.peer_view(row, cp, summary))
        return out

    async def keys_view(self) -> dict[str, Any]:
        """This exchange's key and every peer key (what an audit verifier trusts for mirrored records)."""
        peers = await self.peers()
        return {
            "self": self.ctx.identity_view(),
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

    async def mark(self, authority: str, *, ok: bool, error: str | None = None, synced: bool = False) -> None:
        """Record whether a peer answered (a reachable peer is rewritten at most every few seconds)."""
        now = self.ctx.clock()
        last = self._marks.get(authority)
        if ok and not synced and last is not None and last[0] and now - last[1] < PEER_MARK_REFRESH_SECONDS:
            return  # still reachable and recently recorded: spare a write per message
        self._marks[authority] = (ok, now)
        values: dict[str, Any] = {"reachable": ok}
        if ok:
            values["last_ok_at"] = now
        else:
            values.update(last_error_at=now, last_error=(error or "")[:500])
        if synced:
            values["last_sync_at"] = now
        async with self.ctx.sessions.begin() as session:
            await session.execute(update(Peer).where(Peer.authority == authority).values(**values))

    async def resolve_location(self, cri_text: str) -> str | None:
        """None when this exchange resolves the CRI; else the owning peer's resolve URL (307 target)."""
        cri = parse_cri(cri_text)
        if cri.authority == self.ctx.authority:
            return None
        async with self.ctx.sessions() as session:
            row = await session.get(Peer, cri.authority)
        if row is None or row.status != "active":
            raise UnknownAuthorityError(
                f"authority {cri.authority} is neither this exchange ({self.ctx.authority}) nor a known peer",
                field="cri",
            )
        return f"{row.url.rstrip('/')}/v1/resolve/{quote(str(cri), safe=':')}"
