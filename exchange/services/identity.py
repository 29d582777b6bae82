"""The exchange's own Ed25519 identity: key file, C2SP key id, signing, the table of past keys, rotation.

The private key lives in `<key_dir>/exchange.pem` (PKCS#8 PEM, mode 0600, created on first start, never
logged). Its key id follows the C2SP rule with the note name `Settings.origin`. Every key the exchange
has signed with is a row of `exchange_keys`, so records and checkpoints signed before a rotation stay
verifiable. A rotation (another process, e.g. `hetex admin rotate-key`) replaces the key file; running
services notice the new file on their next signature (the file's mtime and inode are checked).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.storage.base import now_s
from exchange.storage.identity import ExchangeKey
from federation.dsse import sign_envelope
from federation.keys import (
    Keyring,
    SigningKey,
    VerifyKey,
    check_key_name,
    encode_verifier_key,
    key_id_hex,
    load_signing_key,
    save_signing_key,
)
from federation.note import NoteSigner

log = logging.getLogger("hetex.identity")

KEY_FILE = "exchange.pem"
RETIRED_DIR = "retired"
_REGISTERED = "hetex_exchange_key_registered"


@dataclass(frozen=True)
class ExchangeKeyInfo:
    """Public facts about one exchange key (what GET /v1/ledger/keys shows)."""

    key_id: str
    name: str
    public_key: str
    not_before: int
    not_after: int | None
    status: str

    @property
    def verifier_key(self) -> str:
        """The C2SP verifier key string `<name>+<hex id>+<base64>`."""
        return encode_verifier_key(self.name, VerifyKey.from_base64(self.public_key))

    def to_json(self) -> dict[str, Any]:
        """JSON form with the verifier key string."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "public_key": self.public_key,
            "verifier_key": self.verifier_key,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "status": self.status,
        }


def _info(row: ExchangeKey) -> ExchangeKeyInfo:
    return ExchangeKeyInfo(row.key_id, row.name, row.public_key, row.not_before, row.not_after, row.status)


def load_or_create_key(key_dir: Path) -> SigningKey:
    """Load `<key_dir>/exchange.pem`, creating the directory (0700) and a fresh key (0600) if missing."""
    key_dir = Path(key_dir)
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_dir / KEY_FILE
    if not path.exists():
        try:
            save_signing_key(path, SigningKey.generate())
            log.info("created exchange signing key file %s", path)
        except FileExistsError:  # another process won the race: use its key
            pass
    return load_signing_key(path)


class IdentityService:
    """Signs as the exchange; knows every key it ever signed with (via `exchange_keys`)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key_dir: Path, name: str) -> None:
        self.sessions = sessions
        self.key_dir = Path(key_dir)
        self.name = check_key_name(name)
        self._stamp: tuple[int, int] | None = None
        self._committed: str | None = None
        self._key = self._load()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.key_dir / KEY_FILE)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _load(self) -> SigningKey:
        key = load_or_create_key(self.key_dir)
        self._stamp = self._file_stamp()
        return key

    def refresh(self) -> None:
        """Reload the key file if another process rotated it."""
        if self._file_stamp() != self._stamp:
            self._key = self._load()

    @property
    def signing_key(self) -> SigningKey:
        """The current private key (reloaded after a rotation)."""
        self.refresh()
        return self._key

    @property
    def public_key(self) -> VerifyKey:
        """The current public key."""
        return self.signing_key.public

    @property
    def key_id(self) -> str:
        """C2SP key id (8 hex digits) of the current key under the note name."""
        return key_id_hex(self.name, self.signing_key.public)

    @property
    def note_signer(self) -> NoteSigner:
        """The current key as a C2SP note signer named `name` (the log origin)."""
        return NoteSigner(self.name, self.signing_key)

    def signer(self) -> tuple[str, SigningKey]:
        """(key id, key) of the current key: take it once per batch of signatures."""
        key = self.signing_key
        return key_id_hex(self.name, key.public), key

    def sign_envelope(
        self, payload_type: str, payload: bytes, signer: tuple[str, SigningKey] | None = None
    ) -> dict[str, Any]:
        """A DSSE envelope over `payload`, signed by the current exchange key (or `signer` from signer())."""
        return sign_envelope(payload_type, payload, [signer or self.signer()])

    def countersign(self, envelope: dict[str, Any], payload_type: str, payload: bytes) -> dict[str, Any]:
        """`envelope` with the exchange's signature over the same PAE appended to its signatures."""
        own = self.sign_envelope(payload_type, payload)["signatures"][0]
        kept = [s for s in envelope["signatures"] if s.get("keyid") != own["keyid"]]
        return {"payload": envelope["payload"], "payloadType": payload_type, "signatures": [*kept, own]}

    async def ensure_registered(self, session: AsyncSession) -> None:
        """Make sure the current key is a `current` row of exchange_keys (older current rows become retired)."""
        key = self.signing_key
        kid = key_id_hex(self.name, key.public)
        if kid in (self._committed, session.info.get(_REGISTERED)):
            return
        row = await session.get(ExchangeKey, kid)
        if row is not None and session.info.get(_REGISTERED) is None:
            # visible without having been inserted by this session: it is committed, remember that
            self._committed = kid
        if row is None:
            now = now_s()
            await session.execute(
                update(ExchangeKey)
                .where(ExchangeKey.status == "current", ExchangeKey.key_id != kid)
                .values(status="retired", not_after=now)
            )
            values = {
                "key_id": kid,
                "name": self.name,
                "public_key": key.public.to_base64(),
                "not_before": now,
                "status": "current",
                "created_at": now,
            }
            # several processes sharing the key file may register it at once: the first insert wins
            dialect = session.get_bind().dialect.name
            insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
            await session.execute(insert_fn(ExchangeKey).values(**values).on_conflict_do_nothing())
            log.info("registered exchange key %s (%s)", kid, self.name)
        session.info[_REGISTERED] = kid

    async def register(self) -> None:
        """ensure_registered in its own transaction (at service start, so GET /v1/ledger/keys lists the key)."""
        async with self.sessions.begin() as session:
            await self.ensure_registered(session)

    async def keys(self, session: AsyncSession | None = None) -> list[ExchangeKeyInfo]:
        """Every exchange key, oldest first."""
        if session is None:
            async with self.sessions() as own:
                return await self.keys(own)
        rows = (await session.scalars(select(ExchangeKey).order_by(ExchangeKey.not_before, ExchangeKey.key_id))).all()
        return [_info(r) for r in rows]

    async def keyring(self, session: AsyncSession | None = None) -> Keyring:
        """Keyring of every non-revoked exchange key (plus the current one), named for notes and DSSE."""
        ring = Keyring()
        for info in await self.keys(session):
            if info.status != "revoked":
                ring.add(
                    info.key_id,
                    VerifyKey.from_base64(info.public_key),
                    name=info.name,
                    not_before=info.not_before,
                    not_after=info.not_after,
                )
        if self.key_id not in ring:
            ring.add_named(self.name, self.public_key)
        return ring

    async def rotate(self, session: AsyncSession | None = None) -> ExchangeKeyInfo:
        """Make a fresh key current: the old file moves to retired/<key id>.pem and its row gets not_after."""
        if session is None:
            async with self.sessions.begin() as own:
                return await self.rotate(own)
        old = self.signing_key
        old_id = key_id_hex(self.name, old.public)
        await self.ensure_registered(session)
        retired = self.key_dir / RETIRED_DIR
        retired.mkdir(mode=0o700, exist_ok=True)
        new = SigningKey.generate()
        tmp = self.key_dir / (KEY_FILE + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        save_signing_key(tmp, new)
        archived = retired / f"{old_id}.pem"
        if not archived.exists():
            save_signing_key(archived, old)
        os.replace(tmp, self.key_dir / KEY_FILE)
        self.refresh()
        session.info.pop(_REGISTERED, None)
        await self.ensure_registered(session)
        log.info("rotated exchange key %s -> %s", old_id, self.key_id)
        row = await session.get(ExchangeKey, self.key_id)
        assert row is not None
        return _info(row)
