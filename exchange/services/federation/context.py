"""What every federation role shares: database, settings, clock, this exchange's identity, the peer client.

One FederationContext per exchange process; the role services (peers, gate, inbound, outbound, summaries,
mirror, resync, reads) hold it rather than copies, so a test that moves the clock moves it for every role.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService
from exchange.services.peer_client import PeerClient
from exchange.settings import Settings
from exchange.storage.base import now_s
from exchange.storage.federation import Peer
from federation.keys import VerifyKey
from federation.peering import LocalIdentity, PeerIdentity, check_authority
from identifiers.catalogue import Catalogue, load_catalogue
from identifiers.errors import ConflictError, NotFoundError, ValidationError

log = logging.getLogger("hetex.federation")

OPEN_ORDER = ("open", "partially_filled")


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


class FederationContext:
    """This exchange as seen by the federation roles (see the module docstring)."""

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
        self.settings = settings
        self.identity = identity
        self.ledger = ledger
        self.clock = clock
        self.authority = check_authority(settings.authority, "HETEX_AUTHORITY")
        #: catalogue SCU per model (an SCU order forwarded here is converted per model with it)
        self.scu: dict[str, Decimal | None] = {m.code: m.scu for m in (catalogue or load_catalogue()).models}
        self.client = PeerClient(lambda: self.me, timeout=settings.federation_peer_timeout_seconds, clock=clock)
        #: set when this exchange's free capacity changed (the summary loop publishes a new summary)
        self.publish_wanted = asyncio.Event()
        #: set when forwarding may now succeed (a peer summary arrived, an order is waiting)
        self.forward_wanted = asyncio.Event()

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


def parse_body(model: type[BaseModel], data: Any, field_prefix: str = "body") -> Any:
    """Validate a message body with `model`; ValidationError naming the first bad field."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in (field_prefix, *first["loc"]))
        raise ValidationError(f"{where}: {first['msg']}", field=where) from None


def b64(data: bytes) -> str:
    """Standard base64 text of `data` (roots and proof hashes in JSON answers)."""
    return base64.b64encode(data).decode("ascii")


def peer_identity(row: Peer) -> PeerIdentity:
    """The protocol identity of a stored peer."""
    return PeerIdentity(row.authority, row.origin, VerifyKey.from_base64(row.public_key), row.url)


async def peer_rows(session: AsyncSession, *, active_only: bool = True) -> list[Peer]:
    """Stored peers by authority (only active ones unless asked)."""
    stmt = select(Peer).order_by(Peer.authority)
    if active_only:
        stmt = stmt.where(Peer.status == "active")
    return list((await session.scalars(stmt)).all())
