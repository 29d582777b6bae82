"""Mirroring: usage and settlement records of a cross-exchange contract, signed by the owning exchange, are
sent to the buyer's exchange (durable outbox, retried) and appended to its log too, so both logs show them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.services.federation.context import FederationContext, parse_body, peer_identity, peer_rows
from exchange.services.federation.gate import replay, store
from exchange.services.federation.wire import MIRRORABLE, MirrorBody
from exchange.services.peer_client import PeerRefusedError, PeerUnavailableError
from exchange.storage.federation import FederationOutbox, MirroredRecord, PeerContract
from federation.dsse import record_payload_type, verify_envelope
from federation.errors import EnvelopeError
from federation.peering import VerifiedPeerMessage
from identifiers.errors import ValidationError
from identifiers.ids import new_id_str

#: session.info key: contracts this transaction found not to be mirrored (no owner-side peer contract)
_LOCAL_CONTRACTS = "hetex_unmirrored_contracts"
#: session.info key: the peer contracts prepare_mirror read in this transaction, by contract id
_OWNED_CONTRACTS = "hetex_peer_contracts"
#: most contract ids a process remembers as not mirrored (then it forgets them all and looks them up again)
UNMIRRORED_CACHE_MAX = 1_000_000


class Mirror:
    """Queues and delivers mirrored records (owner side) and keeps the ones peers mirror here (buyer side)."""

    def __init__(self, ctx: FederationContext) -> None:
        self.ctx = ctx
        #: existing contracts found to have no owner-side peer contract. That stays true: the owner side's
        #: PeerContract row is written in the transaction that creates the contract (inbound commit), and a
        #: buyer-side row never turns into an owner-side one; so the lookup is made once per contract per process
        self._unmirrored: set[str] = set()

    def _known_unmirrored(self, contract_id: str) -> bool:
        return contract_id in self._unmirrored

    def _remember_unmirrored(self, contract_ids: Iterable[str]) -> None:
        if len(self._unmirrored) >= UNMIRRORED_CACHE_MAX:
            self._unmirrored.clear()
        self._unmirrored.update(contract_ids)

    async def prepare_mirror(self, session: AsyncSession, contract_ids: list[str]) -> None:
        """Hook for usage before it takes the log lock: look up, in one query, which of `contract_ids` (existing
        contracts) are cross-exchange contracts owned here, so enqueue_mirror after the append reads nothing;
        contracts this process already knows to be local are not looked up again."""
        local = session.info.setdefault(_LOCAL_CONTRACTS, set())
        local.update(cid for cid in contract_ids if self._known_unmirrored(cid))
        wanted = [cid for cid in contract_ids if cid not in local]
        if not wanted:
            return
        stmt = select(PeerContract).where(PeerContract.contract_id.in_(wanted))
        found = {pc.contract_id: pc for pc in await session.scalars(stmt)}
        unmirrored = [cid for cid in wanted if cid not in found or found[cid].side != "owner"]
        local.update(unmirrored)
        self._remember_unmirrored(unmirrored)
        session.info.setdefault(_OWNED_CONTRACTS, {}).update((cid, pc) for cid, pc in found.items())

    async def enqueue_mirror(
        self, session: AsyncSession, contract_id: str, record_type: str, record_id: str, envelope: Mapping[str, Any]
    ) -> bool:
        """Hook for usage/settlement (in the caller's transaction, after it appended the record here): queue the
        signed record for the buyer's exchange when `contract_id` is a cross-exchange contract owned here."""
        if record_type not in MIRRORABLE:
            raise ValidationError(f"record_type must be one of {sorted(MIRRORABLE)}", field="record_type")
        local = session.info.setdefault(_LOCAL_CONTRACTS, set())
        if contract_id in local:  # already looked up in this transaction (a usage batch: one lookup per contract)
            return False
        pc = session.info.get(_OWNED_CONTRACTS, {}).get(contract_id) or await session.get(PeerContract, contract_id)
        if pc is None or pc.side != "owner":
            local.add(contract_id)
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
                next_attempt_at=self.ctx.clock(),
                created_at=self.ctx.clock(),
            )
        )
        return True

    async def deliver_outbox(self, limit: int = 50) -> dict[str, int]:
        """Send due outbox messages (each with its row id as message id, so retries are idempotent)."""
        ctx = self.ctx
        now = ctx.clock()
        async with ctx.sessions() as session:
            rows = (
                await session.scalars(
                    select(FederationOutbox)
                    .where(FederationOutbox.status == "pending", FederationOutbox.next_attempt_at <= now)
                    .order_by(FederationOutbox.created_at, FederationOutbox.id)
                    .limit(limit)
                )
            ).all()
            peers = {r.authority: peer_identity(r) for r in await peer_rows(session)} if rows else {}
        sent = failed = 0
        for row in rows:
            peer = peers.get(row.peer_authority)
            if peer is None:
                continue
            msg = ctx.client.build(peer, row.msg_type, row.body, message_id=row.id)
            values: dict[str, Any]
            try:
                await ctx.client.send(peer, row.path, msg)
                values = {"status": "sent", "sent_at": ctx.clock(), "attempts": row.attempts + 1}
                sent += 1
            except (PeerUnavailableError, PeerRefusedError) as exc:
                delay = min(60, 2 ** min(row.attempts, 6))
                values = {
                    "attempts": row.attempts + 1,
                    "next_attempt_at": ctx.clock() + delay,
                    "last_error": exc.message[:500],
                }
                failed += 1
            async with ctx.sessions.begin() as session:
                await session.execute(update(FederationOutbox).where(FederationOutbox.id == row.id).values(**values))
        return {"sent": sent, "failed": failed}

    async def receive_mirror(self, v: VerifiedPeerMessage) -> dict[str, Any]:
        """Buyer side of mirror: records of our cross-exchange contracts, signed by the owner, appended here
        (countersigned by this exchange) so both logs and exports show them."""
        ctx = self.ctx
        body = parse_body(MirrorBody, v.body)
        now = ctx.clock()
        ring = v.peer.keyring()
        async with ctx.sessions.begin() as session:
            stored = await replay(session, v)
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
                appended = await ctx.ledger.append_signed(session, item.record_type, item.record_id, item.envelope)
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
            store(session, v, response, ctx.clock())
        return response

    async def mirrored_view(self, contract_id: str | None = None, *, peer: str | None = None) -> list[dict[str, Any]]:
        """Mirrored records kept here, optionally only those mirrored by `peer`."""
        async with self.ctx.sessions() as session:
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
