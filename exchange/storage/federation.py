"""Tables of federation: peers, their checkpoints and summaries, inbound message results, holds (owner
side), outbound hold requests (buyer side), two-exchange contracts, mirrored records, outbox, events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.storage.base import Base, CreatedAt

HOLD_STATUSES = ("held", "committed", "released", "expired")
OUTBOUND_STATUSES = ("requested", "held", "committing", "committed", "released", "refused", "failed")


class Peer(CreatedAt, Base):
    """Another exchange this one trades with: authority, URL, key, and what we last learned about it."""

    __tablename__ = "peers"

    authority: Mapped[str] = mapped_column(String(8), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    origin: Mapped[str] = mapped_column(String(200), nullable=False)
    public_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    key_id: Mapped[str] = mapped_column(String(8), nullable=False, unique=True)
    participant_id: Mapped[str | None] = mapped_column(ForeignKey("participants.id"))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    reachable: Mapped[bool | None] = mapped_column(Boolean)
    last_ok_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    log_status: Mapped[str] = mapped_column(String(16), nullable=False, default="unknown")
    log_problem: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[int | None] = mapped_column(BigInteger)


class PeerCheckpoint(CreatedAt, Base):
    """A peer's signed checkpoint we verified (signature, and consistency with the previous one we kept)."""

    __tablename__ = "peer_checkpoints"

    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    consistent: Mapped[bool] = mapped_column(Boolean, nullable=False)


class PeerLogEvidence(CreatedAt, Base):
    """Why a peer's log was flagged inconsistent: the last checkpoint we verified and the one that conflicts
    with it (both signed by the peer: evidence of a fork anyone can check offline), until re-verified."""

    __tablename__ = "peer_log_evidence"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False, index=True)
    problem: Mapped[str] = mapped_column(Text, nullable=False)
    kept_size: Mapped[int | None] = mapped_column(BigInteger)
    kept_root: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    kept_note: Mapped[str | None] = mapped_column(Text)
    #: the conflicting checkpoint (None when its signature was refused: then it is no evidence of a fork)
    seen_size: Mapped[int | None] = mapped_column(BigInteger)
    seen_root: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    seen_note: Mapped[str | None] = mapped_column(Text)
    #: None while the peer stays flagged; `restored` (its proofs verified) or `re_added` (operator re-added it)
    resolution: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[int | None] = mapped_column(BigInteger)


class CapacitySummaryRow(Base):
    """The newest trusted capacity summary per origin (our own included, which carries the version counter)."""

    __tablename__ = "capacity_summaries"

    origin_authority: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    issued_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    received_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PeerMessage(CreatedAt, Base):
    """The stored result of an inbound peer message: a retry with the same (origin, message id) gets it back."""

    __tablename__ = "peer_messages"

    origin_authority: Mapped[str] = mapped_column(String(8), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    msg_type: Mapped[str] = mapped_column(String(24), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class FederationHold(CreatedAt, Base):
    """Owner side: capacity held for a peer's order until it commits, releases, or the hold expires."""

    __tablename__ = "federation_holds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    origin_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False)
    message_id: Mapped[str] = mapped_column(String(80), nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="held")
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    start_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_federation_holds_status_expires_at", "status", "expires_at"),)


class FederationHoldLine(Base):
    """One pool's share of a hold, with the contract body both exchanges will sign if it commits."""

    __tablename__ = "federation_hold_lines"

    contract_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    hold_id: Mapped[str] = mapped_column(ForeignKey("federation_holds.id"), nullable=False, index=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), nullable=False, index=True)
    offer_id: Mapped[str | None] = mapped_column(ForeignKey("offers.id"))
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    start_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class OutboundHold(CreatedAt, Base):
    """Buyer side: one request to a peer to hold capacity for a local order, and where it stands."""

    __tablename__ = "federation_outbound"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False, index=True)
    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="requested")
    devices: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    remote_hold_id: Mapped[str | None] = mapped_column(String(36))
    lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    commit_message_id: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_federation_outbound_status", "status"),)


class PeerContract(CreatedAt, Base):
    """A contract between a buyer at one exchange and a pool at another, with both exchanges' signatures."""

    __tablename__ = "peer_contracts"

    contract_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    side: Mapped[str] = mapped_column(String(8), nullable=False)  # "owner" (pool here) or "buyer" (order here)
    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False, index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False, index=True)
    hold_id: Mapped[str] = mapped_column(String(36), nullable=False)
    pool_cri: Mapped[str] = mapped_column(String(80), nullable=False)
    model: Mapped[str] = mapped_column(String(32), nullable=False)
    region: Mapped[str] = mapped_column(String(8), nullable=False)
    devices: Mapped[int] = mapped_column(Integer, nullable=False)
    start_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    price_fen: Mapped[int] = mapped_column(BigInteger, nullable=False)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    log_index: Mapped[int | None] = mapped_column(BigInteger)


class MirroredRecord(CreatedAt, Base):
    """A usage or settlement record of a cross-exchange contract, signed at the owner and mirrored here."""

    __tablename__ = "mirrored_records"

    record_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False)
    record_type: Mapped[str] = mapped_column(String(40), nullable=False)
    contract_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    log_index: Mapped[int | None] = mapped_column(BigInteger)


class FederationOutbox(CreatedAt, Base):
    """A message to deliver to a peer after the transaction that produced it committed (retried until sent)."""

    __tablename__ = "federation_outbox"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    peer_authority: Mapped[str] = mapped_column(ForeignKey("peers.authority"), nullable=False)
    msg_type: Mapped[str] = mapped_column(String(24), nullable=False)
    path: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_federation_outbox_status_next_attempt_at", "status", "next_attempt_at"),)


class FederationEvent(Base):
    """Something an operator should see: refused summaries of known peers, log inconsistencies, expired holds."""

    __tablename__ = "federation_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    peer_authority: Mapped[str | None] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
