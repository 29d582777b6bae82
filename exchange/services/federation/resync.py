"""Resync: this exchange's log proofs for peers, and checking each peer's log (signed checkpoint, RFC 9162
consistency with the last one kept), its summary and our pending commits to it."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from sqlalchemy import select, update

from exchange.services.federation.commits import Commits
from exchange.services.federation.context import FederationContext, b64
from exchange.services.federation.events import EventLog
from exchange.services.federation.peers import PeerDirectory
from exchange.services.federation.summaries import Summaries
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.storage.federation import Peer, PeerCheckpoint
from federation.errors import NoteError, ProofError
from federation.merkle import verify_consistency
from federation.note import NoteVerifier, verify_checkpoint
from federation.peering import PeerIdentity, StaleSummaryError, SummaryError


class Resync:
    """Serves own checkpoints and proofs; verifies peers' logs and marks a rewritten one `inconsistent`."""

    def __init__(
        self, ctx: FederationContext, peers: PeerDirectory, summaries: Summaries, commits: Commits, events: EventLog
    ) -> None:
        self.ctx = ctx
        self.peers = peers
        self.summaries = summaries
        self.commits = commits
        self.events = events

    async def own_checkpoint(self) -> dict[str, Any]:
        """This exchange's latest signed checkpoint (signing one first if the log grew)."""
        cp = await self.ctx.ledger.checkpoint()
        return {"origin": self.ctx.settings.origin, "size": cp.size, "root": b64(cp.root), "note": cp.note}

    async def own_consistency(self, size1: int, size2: int) -> dict[str, Any]:
        """Consistency proof between two sizes of this exchange's log."""
        proof = await self.ctx.ledger.consistency_proof(size1, size2)
        return {
            "size1": proof.size1,
            "size2": proof.size2,
            "hashes": [b64(h) for h in proof.hashes],
            "root1": b64(proof.root1),
            "root2": b64(proof.root2),
        }

    async def check_peer_log(self, peer: PeerIdentity) -> dict[str, Any]:
        """Fetch the peer's checkpoint, verify its signature and its consistency with the last one we kept
        (RFC 9162 proof fetched from the peer); a rewritten log is marked `inconsistent` and reported."""
        ctx = self.ctx
        cp_json = await ctx.client.get(peer, "/v1/federation/checkpoint")
        try:
            cp = verify_checkpoint(
                str(cp_json["note"]), [NoteVerifier(peer.origin, peer.public_key)], origin=peer.origin
            )
        except (NoteError, KeyError, TypeError) as exc:
            return await self._log_problem(peer, f"checkpoint signature refused: {exc}", None)
        async with ctx.sessions() as session:
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
                proof = await ctx.client.get(peer, f"/v1/federation/consistency?from={last.size}&to={cp.size}")
                try:
                    hashes = [base64.b64decode(h) for h in proof["hashes"]]
                    verify_consistency(last.size, cp.size, hashes, last.root, cp.root)
                except (ProofError, KeyError, TypeError, ValueError) as exc:
                    return await self._log_problem(
                        peer, f"checkpoint {cp.size} is not consistent with {last.size}: {exc}", cp_json
                    )
        async with ctx.sessions.begin() as session:
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
                        created_at=ctx.clock(),
                    )
                )
            await session.execute(update(Peer).where(Peer.authority == peer.authority).values(log_status="consistent"))
        return {"status": "consistent", "size": cp.size}

    async def _log_problem(self, peer: PeerIdentity, problem: str, cp_json: Any) -> dict[str, Any]:
        async with self.ctx.sessions.begin() as session:
            await session.execute(
                update(Peer)
                .where(Peer.authority == peer.authority)
                .values(log_status="inconsistent", log_problem=problem[:1000])
            )
        note = cp_json.get("note") if isinstance(cp_json, dict) else None
        await self.events.record("log_inconsistent", peer.authority, {"problem": problem, "note": note})
        return {"status": "inconsistent", "problem": problem}

    async def sync_peer(self, peer: PeerIdentity) -> dict[str, Any]:
        """Resync with one peer: its log (checkpoint + consistency), its summary, our pending commits to it."""
        out: dict[str, Any] = {"peer": peer.authority}
        try:
            out["log"] = await self.check_peer_log(peer)
            envelope = await self.ctx.client.get(peer, "/v1/federation/summary")
            try:
                out["summary"] = (await self.summaries.accept_summary(peer, envelope)).version
            except StaleSummaryError:
                out["summary"] = "unchanged"
            except SummaryError as exc:
                out["summary"] = f"refused: {exc.details.get('reason')}"
                await self.events.record("refused_summary", peer.authority, {"reason": exc.details.get("reason")})
        except (PeerUnavailableError, PeerRefusedError) as exc:
            await self.peers.mark(peer.authority, ok=False, error=exc.message)
            out["error"] = exc.message
            return out
        await self.peers.mark(peer.authority, ok=True, synced=True)
        return out

    async def sync_all(self) -> list[dict[str, Any]]:
        """Resync every peer concurrently, then retry pending commits."""
        results = list(await asyncio.gather(*(self.sync_peer(p) for p in await self.peers.peers())))
        await self.commits.reconcile_outbound()
        return results
