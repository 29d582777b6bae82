"""Recovery of a peer flagged `inconsistent`: re-verified on the operator's request from consistency proofs.

The peer's current signed checkpoint must extend every checkpoint of it we hold a signature for: the last
one we verified and, for each open piece of evidence, the conflicting one. If all proofs verify, the flag
was wrong (e.g. a proof corrupted in transit) and the peer is restored; a real fork (two signed checkpoints
no single log can extend, or a log that shrank) stays flagged, its evidence kept and shown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from exchange.services.federation.context import FederationContext, b64
from exchange.services.federation.events import EventLog
from exchange.services.federation.peers import PeerDirectory
from exchange.services.federation.resync import Resync, extension_problem, last_consistent
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.services.principals import Principal
from exchange.storage.federation import Peer, PeerCheckpoint, PeerLogEvidence
from federation.errors import NoteError
from federation.note import Checkpoint, NoteVerifier, verify_checkpoint
from federation.peering import PeerIdentity


def _checkpoint_view(size: int | None, root: bytes | None, note: str | None) -> dict[str, Any] | None:
    if size is None or root is None:
        return None
    return {"size": size, "root": b64(root), "note": note}


def evidence_view(row: PeerLogEvidence) -> dict[str, Any]:
    """One piece of evidence as the operator sees it (the notes verify offline with the peer's key)."""
    return {
        "id": row.id,
        "peer": row.peer_authority,
        "problem": row.problem,
        "detected_at": row.created_at,
        "kept": _checkpoint_view(row.kept_size, row.kept_root, row.kept_note),
        "seen": _checkpoint_view(row.seen_size, row.seen_root, row.seen_note),
        "resolution": row.resolution,
        "resolved_at": row.resolved_at,
    }


class Recovery:
    """Re-verifies flagged peers (operator only) and lists the evidence behind each flag."""

    def __init__(self, ctx: FederationContext, peers: PeerDirectory, resync: Resync, events: EventLog) -> None:
        self.ctx = ctx
        self.peers = peers
        self.resync = resync
        self.events = events

    async def evidence(self, peer: str | None = None, *, open_only: bool = False) -> list[dict[str, Any]]:
        """Evidence behind log flags, newest first (optionally one peer's, optionally still open)."""
        async with self.ctx.sessions() as session:
            stmt = select(PeerLogEvidence).order_by(PeerLogEvidence.created_at.desc(), PeerLogEvidence.id)
            if peer:
                stmt = stmt.where(PeerLogEvidence.peer_authority == peer)
            if open_only:
                stmt = stmt.where(PeerLogEvidence.resolution.is_(None))
            rows = (await session.scalars(stmt.limit(500))).all()
        return [evidence_view(r) for r in rows]

    async def evidence_for(self, who: Principal, peer: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/federation/evidence: operator only."""
        who.require_role("operator", action="read federation evidence")
        return await self.evidence(peer)

    async def reverify_for(self, who: Principal, authority: str) -> dict[str, Any]:
        """POST /v1/peers/{authority}/reverify: operator only."""
        who.require_role("operator", action="re-verify a peer's log")
        return await self.reverify(authority)

    async def reverify(self, authority: str) -> dict[str, Any]:
        """Re-verify a peer's log from its current checkpoint and consistency proofs: `restored` when every
        signed checkpoint we hold of it is extended by its current one, else it stays flagged."""
        peer = await self.peers.peer(authority)
        async with self.ctx.sessions() as session:
            row = await session.get(Peer, authority)
            assert row is not None
            flagged = row.log_status == "inconsistent"
            kept = await last_consistent(session, authority)
            open_rows = (
                await session.scalars(
                    select(PeerLogEvidence).where(
                        PeerLogEvidence.peer_authority == authority, PeerLogEvidence.resolution.is_(None)
                    )
                )
            ).all()
        if not flagged:
            return {"peer": authority, "restored": False, **await self.resync.check_peer_log(peer)}
        try:
            cp_json = await self.ctx.client.get(peer, "/v1/federation/checkpoint")
            cp = self._verified(peer, cp_json)
            if cp is None:
                problems = ["current checkpoint signature refused"]
            else:
                problems = await self._unextended(peer, cp, kept, open_rows)
        except (PeerUnavailableError, PeerRefusedError) as exc:
            await self.peers.mark(authority, ok=False, error=exc.message)
            return {"peer": authority, "status": "inconsistent", "restored": False, "unreachable": exc.message}
        if problems:
            await self.events.record("log_reverify_failed", authority, {"problems": problems})
            return {
                "peer": authority,
                "status": "inconsistent",
                "restored": False,
                "problems": problems,
                "evidence": [evidence_view(r) for r in open_rows],
            }
        assert cp is not None
        await self._restore(authority, cp, str(cp_json["note"]), [r.id for r in open_rows])
        return {"peer": authority, "status": "consistent", "restored": True, "size": cp.size}

    def _verified(self, peer: PeerIdentity, cp_json: Any) -> Checkpoint | None:
        try:
            return verify_checkpoint(
                str(cp_json["note"]), [NoteVerifier(peer.origin, peer.public_key)], origin=peer.origin
            )
        except (NoteError, KeyError, TypeError):
            return None

    async def _unextended(
        self, peer: PeerIdentity, cp: Checkpoint, kept: PeerCheckpoint | None, open_rows: Any
    ) -> list[str]:
        """What keeps the flag: each signed checkpoint we hold that `cp` does not extend."""
        anchors: list[tuple[str, int, bytes]] = []
        if kept is not None:
            anchors.append(("kept", kept.size, kept.root))
        for ev in open_rows:
            # only a conflicting checkpoint whose signature still verifies is evidence (a forged one is not)
            if ev.seen_note is not None and self._verified(peer, {"note": ev.seen_note}) is not None:
                anchors.append((f"evidence {ev.id}", int(ev.seen_size), bytes(ev.seen_root)))
        problems = []
        for name, size, root in anchors:
            problem = await extension_problem(self.ctx.client, peer, size, root, cp)
            if problem is not None:
                problems.append(f"{name}: {problem}")
        return problems

    async def _restore(self, authority: str, cp: Checkpoint, note: str, evidence_ids: list[str]) -> None:
        now = self.ctx.clock()
        async with self.ctx.sessions.begin() as session:
            if await session.get(PeerCheckpoint, (authority, cp.size)) is None:
                session.add(
                    PeerCheckpoint(
                        peer_authority=authority, size=cp.size, root=cp.root, note=note, consistent=True, created_at=now
                    )
                )
            await session.execute(
                update(Peer).where(Peer.authority == authority).values(log_status="consistent", log_problem=None)
            )
            if evidence_ids:
                await session.execute(
                    update(PeerLogEvidence)
                    .where(PeerLogEvidence.id.in_(evidence_ids))
                    .values(resolution="restored", resolved_at=now)
                )
        await self.events.record("log_restored", authority, {"size": cp.size, "evidence": evidence_ids})
