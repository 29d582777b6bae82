"""HTTP client for peer exchanges: signed, destination-bound protocol messages with a short timeout.

Never called inside a database transaction: callers read what they need, commit, then talk to peers.
A peer that is down, slow or partitioned surfaces as PeerUnavailableError (never a hang).

Test hook (tests only, documented here): environment variable HETEX_TEST_CORRUPT_PROOF=<authority> makes
the first consistency proof this process fetches from that peer arrive with one hash flipped, as a fault
in transit would leave it (once per process; later proofs are as the peer sent them).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from federation.peering import LocalIdentity, PeerIdentity, new_message, sign_peer_get, sign_peer_request
from identifiers.errors import HetexError

log = logging.getLogger(__name__)

CORRUPT_PROOF_ENV = "HETEX_TEST_CORRUPT_PROOF"


class PeerUnavailableError(HetexError):
    """A peer did not answer in time (down, slow or partitioned)."""

    code = "peer_unavailable"


class PeerRefusedError(HetexError):
    """A peer answered with an error status; `status` and `problem` hold its answer."""

    code = "peer_refused"

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        detail = str(problem.get("detail") or problem.get("code") or f"HTTP {status}")
        super().__init__(f"peer answered {status}: {detail}", status=status, remote_code=problem.get("code"))
        self.status = status
        self.problem = problem


class PeerClient:
    """Sends this exchange's messages to peers and counts them by type (for the per-order message count)."""

    def __init__(self, me: Callable[[], LocalIdentity], *, timeout: float, clock: Callable[[], int]) -> None:
        self._me = me
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.sent: Counter[str] = Counter()
        self._corrupt_proof_from = os.environ.get(CORRUPT_PROOF_ENV) or None  # test hook (module docstring)

    @property
    def me(self) -> LocalIdentity:
        """This exchange's identity (current key: looked up per message, so a rotation takes effect)."""
        return self._me()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (created on first use, inside the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def build(
        self, peer: PeerIdentity, msg_type: str, body: dict[str, Any], message_id: str | None = None
    ) -> dict[str, Any]:
        """A message from this exchange to `peer` (fresh message id unless given, for retries)."""
        return new_message(
            msg_type, self.me.authority, peer.authority, body, sent_at=self.clock(), message_id=message_id
        )

    async def send(self, peer: PeerIdentity, path: str, message: dict[str, Any]) -> dict[str, Any]:
        """POST a signed message to `peer`; its JSON answer, or PeerUnavailableError / PeerRefusedError."""
        if not peer.url:
            raise PeerUnavailableError(f"peer {peer.authority} has no URL", peer=peer.authority)
        url = peer.url.rstrip("/") + path
        body, headers = sign_peer_request("POST", url, message, self.me)
        self.sent[str(message["type"])] += 1
        return await self._do("POST", url, body, headers, peer)

    async def get(self, peer: PeerIdentity, path: str, *, signed: bool = False) -> Any:
        """GET `path` at `peer` (JSON or text), signed when the data is for peers only."""
        if not peer.url:
            raise PeerUnavailableError(f"peer {peer.authority} has no URL", peer=peer.authority)
        url = peer.url.rstrip("/") + path
        headers = sign_peer_get(url, self.me) if signed else {}
        self.sent["get"] += 1
        data = await self._do("GET", url, b"", headers, peer)
        if self._corrupt_proof_from == peer.authority and path.startswith("/v1/federation/consistency"):
            data = self._corrupted(data)
        return data

    def _corrupted(self, proof: Any) -> Any:
        """Test hook: the proof with its first hash flipped (once; see the module docstring)."""
        hashes = proof.get("hashes") if isinstance(proof, dict) else None
        if not hashes:
            return proof
        self._corrupt_proof_from = None
        first = bytearray(base64.b64decode(hashes[0]))
        first[0] ^= 0xFF
        log.warning("test hook %s: consistency proof corrupted", CORRUPT_PROOF_ENV)
        return {**proof, "hashes": [base64.b64encode(bytes(first)).decode(), *hashes[1:]]}

    async def _do(self, method: str, url: str, body: bytes, headers: dict[str, str], peer: PeerIdentity) -> Any:
        try:
            async with self.session.request(method, URL(url, encoded=True), data=body or None, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailableError(
                f"peer {peer.authority} unavailable: {type(exc).__name__}", peer=peer.authority
            ) from None
        data: Any = text
        if "json" in ctype and text:
            try:
                data = json.loads(text)
            except ValueError:
                data = {"detail": text[:300]}
        if status >= 400:
            raise PeerRefusedError(status, data if isinstance(data, dict) else {"detail": str(data)[:300]})
        return data
