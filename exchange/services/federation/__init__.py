"""Federation: peering, capacity summaries, cross-exchange orders with two-phase holds, resync, mirroring.

Roles in one cross-exchange trade (specs/federation.md has the message flow), one module each:
- `outbound` + `commits`: the buyer's exchange forwards an order its local market cannot fill to peers whose
  signed capacity summaries (`summaries`) could fill it, collects holds, then commits them (or releases all);
- `inbound`: the owning exchange clears the forwarded order against its own pools, holds the capacity with an
  expiry, and on commit countersigns the contract: it carries both signatures and is in both logs;
- `gate` verifies every inbound peer message; `peers` is the directory of trusted exchanges; `resync` checks
  peers' logs; `mirror` sends usage and settlement of cross-exchange contracts to the buyer's exchange;
  `reads` scopes the signed GET routes; `service.Federation` assembles them and runs the loops.

Rules kept everywhere: no peer call inside a database transaction; every inbound peer message is verified
(RFC 9421 signature by the peer key, destination bound, fresh, nonce not replayed) and idempotent by
(origin, message id); holds count as reservations (exchange.services.federation_capacity) and expire.
"""

from exchange.services.federation.context import (
    FederationContext,
    PeerMessageReusedError,
    UnknownAuthorityError,
    UnknownHoldError,
    UnknownPeerError,
)
from exchange.services.federation.service import Federation

__all__ = [
    "Federation",
    "FederationContext",
    "PeerMessageReusedError",
    "UnknownAuthorityError",
    "UnknownHoldError",
    "UnknownPeerError",
]
