"""The exchange's own Ed25519 identity: which key is current (the database), where its private half is (files).

The database is the authority on WHICH key signs: the one `exchange_keys` row with status `current`
(a partial unique index allows at most one). The private keys live in the configured key directory,
one PKCS#8 PEM file per key named after its key id (`<key_dir>/<key id>.pem`, mode 0600, never logged,
never in the database); every process of one exchange points `HETEX_KEY_DIR` at the same directory and
looks the current key up by id. Keys are created only by `init` (`hetex admin init`, or the first
`hetex serve` of a database without exchange keys) and `rotate` (`hetex admin rotate-key`); every other
process loads the current key or refuses (`ExchangeKeyMissingError`, naming the fix). See
specs/signing.md section 8.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.storage.base import now_s
from exchange.storage.identity import ExchangeKey
from federation.dsse import sign_envelope
from federation.errors import KeyFormatError
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
from identifiers.errors import ConflictError, UnavailableError, ValidationError

if TYPE_CHECKING:
    from exchange.services.ledger import LedgerService

log = logging.getLogger("hetex.identity")

LEGACY_KEY_FILE = "exchange.pem"  # the single key file of hetex before the key lifecycle (still read)
ROTATION_RECORD = "exchange-key"  # log record type of a rotation (application/vnd.hetex.exchange-key+json)
DEFAULT_OVERLAP_SECONDS = 3600
FIX_INIT = "run `hetex admin init` once for this database (or start `hetex serve` on an empty database)"


class ExchangeKeyMissingError(UnavailableError):
    """This process cannot sign as the exchange: no key in the database, or its private key file is not here
    (a live request answers 503 with Retry-After: the operator's fix, not the caller's; the CLI exits 2)."""

    code = "exchange_key_missing"


class ExchangeKeyExistsError(ConflictError):
    """`init` on a database that already has exchange keys."""

    code = "exchange_key_exists"


class ExchangeKeyNotValidError(ConflictError):
    """The current key is outside its validity period: the exchange refuses to sign with it."""

    code = "exchange_key_not_valid"


@dataclass(frozen=True)
class ExchangeKeyInfo:
    """Public facts about one exchange key (what GET /v1/ledger/keys and bundles' keys/ show)."""

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

    def valid_at(self, at: int) -> bool:
        """True when `at` is inside [not_before, not_after] (not_after None: open-ended)."""
        return self.not_before <= at and (self.not_after is None or at <= self.not_after)

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


def key_file(key_dir: Path, key_id: str) -> Path:
    """Where the private key with `key_id` lives in `key_dir`."""
    return Path(key_dir) / f"{key_id}.pem"


def parse_duration(text: str) -> int:
    """Seconds of `90`, `90s`, `15m`, `1h`, `2d` (a non-negative whole number and an optional unit)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0) if value else 0
    digits = value[:-1] if scale else value
    if not digits.isascii() or not digits.isdigit() or len(digits) > 9:
        raise ValidationError(f"not a duration: {text!r} (use e.g. 0, 90s, 15m, 1h, 2d)", field="overlap")
    return int(digits) * (scale or 1)


class IdentityService:
    """Signs as the exchange with the key the database calls current; creates keys only when told to."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key_dir: Path, name: str) -> None:
        self.sessions = sessions
        self.key_dir = Path(key_dir)
        self.name = check_key_name(name)
        self._loaded: dict[str, SigningKey] = {}  # key id -> private key read from key_dir
        self._current: tuple[str, SigningKey] | None = None

    # ------------------------------------------------------------------------------------ key files

    def _read_key(self, key_id: str) -> SigningKey:
        """The private key with `key_id` from key_dir (cached), or ExchangeKeyMissingError naming the fix."""
        cached = self._loaded.get(key_id)
        if cached is not None:
            return cached
        for path in (key_file(self.key_dir, key_id), self.key_dir / LEGACY_KEY_FILE):
            try:
                key = load_signing_key(path)
            except FileNotFoundError:
                continue
            except (OSError, KeyFormatError, ValueError) as exc:
                raise ExchangeKeyMissingError(f"cannot read exchange key file {path}: {exc}") from None
            if key_id_hex(self.name, key.public) == key_id:
                self._loaded[key_id] = key
                return key
        raise ExchangeKeyMissingError(
            f"the database's current exchange key {key_id} is not in {self.key_dir.resolve()} "
            f"(no {key_id}.pem): point --key-dir or HETEX_KEY_DIR at the exchange's key directory"
        )

    def _write_key(self, key: SigningKey) -> str:
        """Save a fresh key as `<key_dir>/<key id>.pem` (directory 0700, file 0600); return its key id."""
        kid = key_id_hex(self.name, key.public)
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_signing_key(key_file(self.key_dir, kid), key)
        self._loaded[kid] = key
        return kid

    # ------------------------------------------------------------------------------------ database

    async def _current_row(self, session: AsyncSession) -> ExchangeKey | None:
        return await session.scalar(select(ExchangeKey).where(ExchangeKey.status == "current"))

    async def _count(self, session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(ExchangeKey)) or 0)

    async def signer_for(self, session: AsyncSession | None = None) -> tuple[str, SigningKey]:
        """(key id, private key) of the key the database calls current, checked to be valid now.

        Every signature the exchange makes takes its key from here (one indexed row read), so running
        processes follow a rotation made by another process without a restart.
        """
        if session is None:
            async with self.sessions() as own:
                return await self.signer_for(own)
        row = await self._current_row(session)
        if row is None:
            raise ExchangeKeyMissingError(f"this database has no exchange key: {FIX_INIT}")
        info = _info(row)
        now = now_s()
        if not info.valid_at(now):
            raise ExchangeKeyNotValidError(
                f"exchange key {info.key_id} is valid {info.not_before}..{info.not_after}, not at {now}: "
                "run `hetex admin rotate-key`"
            )
        key = self._read_key(info.key_id)
        self._current = (info.key_id, key)
        return self._current

    async def load(self, session: AsyncSession | None = None) -> ExchangeKeyInfo:
        """Load the current key (a process that will sign calls this first); refuse if it cannot."""
        if session is None:
            async with self.sessions() as own:
                return await self.load(own)
        kid, _key = await self.signer_for(session)
        row = await session.get(ExchangeKey, kid)
        assert row is not None
        return _info(row)

    async def init(self, session: AsyncSession | None = None, *, exist_ok: bool = False) -> ExchangeKeyInfo:
        """Create the exchange's first key (database without exchange keys); else refuse, or load if exist_ok."""
        if session is None:
            try:
                async with self.sessions.begin() as own:
                    return await self.init(own, exist_ok=exist_ok)
            except IntegrityError:  # another process initialised the same database at the same moment
                if not exist_ok:
                    raise ExchangeKeyExistsError("another process initialised the exchange key just now") from None
                return await self.load()
        if await self._count(session):
            if not exist_ok:
                current = await self._current_row(session)
                raise ExchangeKeyExistsError(
                    f"this database already has exchange keys (current: {current.key_id if current else 'none'}); "
                    "use `hetex admin rotate-key` to replace the current one"
                )
            return await self.load(session)
        key = SigningKey.generate()
        kid = self._write_key(key)  # the file exists before the row that names it is committed
        now = now_s()
        row = ExchangeKey(
            key_id=kid,
            name=self.name,
            public_key=key.public.to_base64(),
            not_before=now,
            not_after=None,
            status="current",
            created_at=now,
        )
        session.add(row)
        await session.flush()
        self._current = (kid, key)
        log.info("created exchange key %s (%s) in %s", kid, self.name, self.key_dir.resolve())
        return _info(row)

    async def start(self, *, create_if_empty: bool) -> ExchangeKeyInfo:
        """At service start: load the current key; on a database without exchange keys create one if allowed."""
        if create_if_empty:
            return await self.init(exist_ok=True)
        return await self.load()

    # ------------------------------------------------------------------------------------ signing

    def last_signer(self) -> tuple[str, SigningKey] | None:
        """The (key id, key) this process last read as current (signer_for), without a read: a guess to sign
        with ahead of a lock, to be checked against signer_for under it."""
        return self._current

    def _need_current(self) -> tuple[str, SigningKey]:
        if self._current is None:
            raise ExchangeKeyMissingError(f"the exchange key is not loaded in this process: {FIX_INIT}")
        return self._current

    @property
    def signing_key(self) -> SigningKey:
        """The current private key as last read from the database (signer_for/load refresh it)."""
        return self._need_current()[1]

    @property
    def public_key(self) -> VerifyKey:
        """The current public key (as last read)."""
        return self.signing_key.public

    @property
    def key_id(self) -> str:
        """C2SP key id (8 hex digits) of the current key (as last read)."""
        return self._need_current()[0]

    @property
    def note_signer(self) -> NoteSigner:
        """The current key (as last read) as a C2SP note signer named `name` (the log origin)."""
        return NoteSigner(self.name, self.signing_key)

    def signer(self) -> tuple[str, SigningKey]:
        """(key id, key) of the current key as last read; signing paths use `await signer_for(session)`."""
        return self._need_current()

    def sign_envelope(self, payload_type: str, payload: bytes, signer: tuple[str, SigningKey]) -> dict[str, Any]:
        """A DSSE envelope over `payload`, signed by `signer` (from signer_for)."""
        return sign_envelope(payload_type, payload, [signer])

    def countersign(
        self, envelope: dict[str, Any], payload_type: str, payload: bytes, signer: tuple[str, SigningKey]
    ) -> dict[str, Any]:
        """`envelope` with the exchange's signature over the same PAE appended to its signatures."""
        own = self.sign_envelope(payload_type, payload, signer)["signatures"][0]
        kept = [s for s in envelope["signatures"] if s.get("keyid") != own["keyid"]]
        return {"payload": envelope["payload"], "payloadType": payload_type, "signatures": [*kept, own]}

    # ------------------------------------------------------------------------------------ the key table

    async def current(self, session: AsyncSession | None = None) -> ExchangeKeyInfo | None:
        """The key the database calls current (None before init)."""
        if session is None:
            async with self.sessions() as own:
                return await self.current(own)
        row = await self._current_row(session)
        return None if row is None else _info(row)

    async def keys(self, session: AsyncSession | None = None) -> list[ExchangeKeyInfo]:
        """Every exchange key, oldest first."""
        if session is None:
            async with self.sessions() as own:
                return await self.keys(own)
        rows = (await session.scalars(select(ExchangeKey).order_by(ExchangeKey.not_before, ExchangeKey.key_id))).all()
        return [_info(r) for r in rows]

    async def keyring(self, session: AsyncSession | None = None) -> Keyring:
        """Keyring of every non-revoked exchange key with its validity, named for notes and DSSE."""
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
        return ring

    async def rotate(
        self, ledger: LedgerService, *, overlap_seconds: int = DEFAULT_OVERLAP_SECONDS
    ) -> tuple[ExchangeKeyInfo, ExchangeKeyInfo]:
        """Make a fresh key current, in one transaction with a log entry signed by the old key naming the new.

        The old key stops signing at once (it is no longer `current`) but stays valid until now +
        `overlap_seconds` (not_after), for signatures taken just before the rotation; it stays in the
        key table forever, so everything it signed remains verifiable. Returns (old, new).
        """
        if overlap_seconds < 0:
            raise ValidationError("overlap must not be negative", field="overlap")
        async with self.sessions.begin() as session:
            await ledger.lock(session)  # every signer holds this lock while it signs: no signature races us
            old_id, old_key = await self.signer_for(session)
            new_key = SigningKey.generate()
            new_id = self._write_key(new_key)  # the file exists before the row that names it is committed
            old_row = await session.get(ExchangeKey, old_id)
            assert old_row is not None
            now = now_s()
            old_after = now + overlap_seconds
            if old_row.not_after is not None:
                old_after = min(old_after, old_row.not_after)
            new_info = ExchangeKeyInfo(new_id, self.name, new_key.public.to_base64(), now, None, "current")
            body = {
                "event": "rotation",
                "origin": self.name,
                "rotated_at": now,
                "old": {"key_id": old_id, "public_key": old_row.public_key, "not_after": old_after},
                "new": {
                    "key_id": new_id,
                    "public_key": new_info.public_key,
                    "verifier_key": new_info.verifier_key,
                    "not_before": now,
                },
            }
            # logged at `now`, the old key's last valid second at overlap 0 (not at a later clock tick)
            await ledger.append_many(session, [(ROTATION_RECORD, new_id, body)], signer=(old_id, old_key), at=now)
            await session.execute(
                update(ExchangeKey).where(ExchangeKey.key_id == old_id).values(status="retired", not_after=old_after)
            )
            session.add(
                ExchangeKey(
                    key_id=new_id,
                    name=self.name,
                    public_key=new_info.public_key,
                    not_before=now,
                    not_after=None,
                    status="current",
                    created_at=now,
                )
            )
            await session.flush()
            old_info = ExchangeKeyInfo(old_id, self.name, old_row.public_key, old_row.not_before, old_after, "retired")
        self._current = (new_id, new_key)
        log.info("rotated exchange key %s -> %s (old key valid until %d)", old_id, new_id, old_after)
        return old_info, new_info
