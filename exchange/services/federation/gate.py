"""The door for inbound peer requests: signature, destination, freshness, nonce; idempotent answers.

Every inbound peer message is verified (RFC 9421 signature by the peer key, destination bound, fresh, nonce
not replayed) before any role sees it, and answered once per (origin, message id): a repeat gets the stored
answer, a different message under a used id is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.federation.context import FederationContext, PeerMessageReusedError, log
from exchange.services.federation.peers import PeerDirectory
from exchange.services.refusals import RefusalLog
from exchange.storage.federation import PeerMessage
from exchange.storage.participants import SeenNonce
from federation.errors import SignatureError
from federation.httpsig import verify_request
from federation.peering import PeerIdentity, VerifiedPeerMessage, message_hash, verify_peer_request
from identifiers.errors import AuthenticationError

PEER_NONCE_PREFIX = "p:"


class PeerGate:
    """Verifies inbound peer requests; refusals are counted by reason, never stored per request."""

    def __init__(self, ctx: FederationContext, peers: PeerDirectory) -> None:
        self.ctx = ctx
        self.peers = peers
        #: refused peer messages by reason (signature, destination, freshness, replay)
        self.refusals = RefusalLog(log, "peer message")

    async def _remember_nonce(self, keyid: str, nonce: str, created: int) -> None:
        """Refuse a second use of a peer request nonce within the window (shared by every process)."""
        if len(nonce) > 128:
            raise SignatureError("signature_malformed", "nonce longer than 128 characters")
        now = self.ctx.clock()
        key = PEER_NONCE_PREFIX + keyid
        expires_at = max(created, now) + self.ctx.settings.signature_window_seconds
        try:
            async with self.ctx.sessions.begin() as session:
                session.add(SeenNonce(key_id=key, nonce=nonce, expires_at=expires_at))
                await session.flush()
        except IntegrityError:
            async with self.ctx.sessions.begin() as session:
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
        peers = await self.peers.by_key_id()
        try:
            verified = verify_peer_request(
                method,
                url,
                headers,
                body,
                peer_by_key_id=peers.get,
                self_authority=self.ctx.authority,
                expected_type=expected_type,
                now=self.ctx.clock(),
                max_skew=self.ctx.settings.signature_window_seconds,
            )
            sig = verified.signature
            await self._remember_nonce(sig.keyid, sig.nonce, sig.created)
        except AuthenticationError as exc:
            keyid = peek_keyid(headers)
            peer = peers.get(keyid or "")
            who = peer.authority if peer else "unknown sender"
            self.refusals.refused(str(exc.details.get("reason", exc.code)), f"{who} {url}: {exc.message}")
            raise
        return verified

    async def verify_peer_get(self, method: str, url: str, headers: Sequence[tuple[str, str]]) -> PeerIdentity:
        """Verify a signed GET from a peer (peer-only reads); refusals are counted like messages."""
        peers = await self.peers.by_key_id()
        try:
            sig = verify_request(
                method,
                url,
                headers,
                b"",
                lambda k: peers[k].public_key if k in peers else None,
                now=self.ctx.clock(),
                max_skew=self.ctx.settings.signature_window_seconds,
            )
            await self._remember_nonce(sig.keyid, sig.nonce, sig.created)
        except AuthenticationError as exc:
            self.refusals.refused(str(exc.details.get("reason", exc.code)), f"GET {url}: {exc.message}")
            raise
        return peers[sig.keyid]


async def replay(session: AsyncSession, v: VerifiedPeerMessage) -> dict[str, Any] | None:
    """The stored answer of an earlier message with the same (origin, message id), or None."""
    row = await session.get(PeerMessage, (v.peer.authority, v.message_id))
    if row is None:
        return None
    if row.request_hash != message_hash(v.message):
        raise PeerMessageReusedError(
            f"message id {v.message_id} was already used for a different message", field="message_id"
        )
    return dict(row.response, replayed=True)


def store(session: AsyncSession, v: VerifiedPeerMessage, response: dict[str, Any], now: int) -> dict[str, Any]:
    """Keep `response` as the answer to `v` (in the caller's transaction); returns it."""
    session.add(
        PeerMessage(
            origin_authority=v.peer.authority,
            message_id=v.message_id,
            msg_type=v.type,
            request_hash=message_hash(v.message),
            status_code=200,
            response=response,
            created_at=now,
        )
    )
    return response


def peek_keyid(headers: Sequence[tuple[str, str]]) -> str | None:
    """The keyid a Signature-Input header claims (to name the sender of a refused request in the log)."""
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
