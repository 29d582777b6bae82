"""Participants: self-registration of providers and buyers (proof of key possession), operator-added
regulators and peers, key lookup for request authentication, and the replay (nonce) memory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.keyid import participant_key_id as participant_key_id
from exchange.services.fields import REQUEST_MODEL, Name, RegionCode, is_valid_name
from exchange.services.nonces import NonceClaim, NonceStore
from exchange.services.principals import ROLES, Principal, SignedRequest
from exchange.services.records import add_record
from exchange.storage.participants import Participant
from exchange.storage.transactions import Prepared, fetch_alone
from federation.errors import KeyFormatError
from federation.keys import VerifyKey
from identifiers.crockford import random_code
from identifiers.errors import ConflictError, NotFoundError, ValidationError
from identifiers.ids import new_id_str
from identifiers.regions import RegionTable

OPERATOR_CODE_LENGTH = 4

#: an Ed25519 public key: standard base64 of its 32 raw bytes, exactly 44 characters
PublicKeyText = Annotated[str, StringConstraints(min_length=44, max_length=44, pattern=r"^[A-Za-z0-9+/]{43}=$")]


class KeyAlreadyRegisteredError(ConflictError):
    """The public key (or its key id) already belongs to a participant."""

    code = "key_already_registered"


class UnknownParticipantError(NotFoundError):
    """No participant has this id."""

    code = "unknown_participant"


class ParticipantRegistration(BaseModel):
    """Body of POST /v1/participants: a provider or buyer registering its own Ed25519 key."""

    model_config = REQUEST_MODEL

    role: Literal["provider", "buyer"]
    name: Name
    public_key: PublicKeyText
    home_region: RegionCode | None = None


class ParticipantStatusChange(BaseModel):
    """Body of POST /v1/participants/{id}/status: the operator suspends or reinstates a participant."""

    model_config = REQUEST_MODEL

    status: Literal["active", "suspended"]


class ParticipantView(BaseModel):
    """A participant as the API shows it."""

    id: str
    role: Literal["provider", "buyer", "regulator", "peer", "operator"]
    name: str
    key_id: str
    public_key: str
    operator_code: str | None
    home_region: str | None
    status: str
    created_at: int


def participant_view(row: Participant) -> ParticipantView:
    """API form of a participant row."""
    return ParticipantView(
        id=row.id,
        role=row.role,  # type: ignore[arg-type]
        name=row.name,
        key_id=row.key_id,
        public_key=row.public_key,
        operator_code=row.operator_code,
        home_region=row.home_region,
        status=row.status,
        created_at=row.created_at,
    )


_PRINCIPAL_COLUMNS = ("id", "role", "name", "key_id", "public_key", "operator_code", "home_region", "status")
_PARTICIPANTS: Table = Participant.__table__  # type: ignore[assignment]
_PRINCIPAL_BY_KEY = Prepared(
    select(*(_PARTICIPANTS.c[name] for name in _PRINCIPAL_COLUMNS)).where(
        _PARTICIPANTS.c.key_id == bindparam("principal_key_id")
    )
)


def principal_of(row: Participant) -> Principal:
    """The authentication view of a participant row."""
    return Principal(
        id=row.id,
        role=row.role,
        name=row.name,
        key_id=row.key_id,
        public_key=row.public_key,
        operator_code=row.operator_code,
        home_region=row.home_region,
        status=row.status,
    )


def decode_participant_key(text: str, field_name: str = "public_key") -> VerifyKey:
    """Base64 raw Ed25519 public key -> VerifyKey, or ValidationError naming the field."""
    try:
        return VerifyKey.from_base64(text)
    except KeyFormatError as exc:
        raise ValidationError(f"{field_name}: {exc.message}", field=field_name) from None


@dataclass
class ParticipantService:
    """Registers participants and answers the authentication layer's questions about keys and nonces."""

    sessions: async_sessionmaker[AsyncSession]
    regions: RegionTable
    signature_window_seconds: int = 300
    nonces: NonceStore | None = None
    #: called with a participant's key id after its status changed (the API's key cache drops the key at once)
    key_changed: list[Callable[[str], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nonce_store: NonceStore = self.nonces or NonceStore(self.signature_window_seconds)

    def _check_region(self, region: str | None, field_name: str = "home_region") -> None:
        if region is not None and region not in self.regions.codes:
            raise ValidationError(f"{field_name}: region {region!r} is not served here", field=field_name)

    async def register(self, body: ParticipantRegistration, signed: SignedRequest) -> ParticipantView:
        """Create a provider or buyer from its signed self-registration (the signature proved the key)."""
        self._check_region(body.home_region)
        key = decode_participant_key(body.public_key)
        async with self.sessions.begin() as session:
            row = await self._insert(session, body.role, body.name, key, body.home_region)
            add_record(session, row.id, "participant.register", row.id, signed)
        return participant_view(row)

    async def add_by_operator(
        self, role: str, name: str, public_key: str, home_region: str | None = None
    ) -> ParticipantView:
        """Add a participant of any role directly (operator's `hetex admin ...`; no signed request)."""
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
        if not is_valid_name(name):  # the API's rule (fields.Name), not str.isprintable
            raise ValidationError(
                "name must be 1-200 characters, no control characters, not only white space", field="name"
            )
        self._check_region(home_region)
        key = decode_participant_key(public_key, "key")
        async with self.sessions.begin() as session:
            row = await self._insert(session, role, name, key, home_region)
        return participant_view(row)

    async def _insert(
        self, session: AsyncSession, role: str, name: str, key: VerifyKey, home_region: str | None
    ) -> Participant:
        kid = participant_key_id(key)
        existing = await session.execute(
            select(Participant.id).where((Participant.key_id == kid) | (Participant.public_key == key.to_base64()))
        )
        if existing.first() is not None:
            raise KeyAlreadyRegisteredError(
                f"key {kid} is already registered to a participant", field="public_key", key_id=kid
            )
        operator_code = await self._fresh_operator_code(session) if role == "provider" else None
        row = Participant(
            id=new_id_str(),
            role=role,
            name=name,
            public_key=key.to_base64(),
            key_id=kid,
            operator_code=operator_code,
            home_region=home_region,
            status="active",
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            raise KeyAlreadyRegisteredError(
                f"key {kid} is already registered to a participant", field="public_key", key_id=kid
            ) from None
        return row

    async def _fresh_operator_code(self, session: AsyncSession) -> str:
        for _ in range(20):
            code = random_code(OPERATOR_CODE_LENGTH)
            taken = await session.execute(select(Participant.id).where(Participant.operator_code == code))
            if taken.first() is None:
                return code
        raise ConflictError("could not mint a free operator code; retry")  # pragma: no cover

    async def get(self, participant_id: str) -> ParticipantView:
        """The participant with this id."""
        async with self.sessions() as session:
            row = await session.get(Participant, participant_id)
        if row is None:
            raise UnknownParticipantError(f"no participant {participant_id}", field="id")
        return participant_view(row)

    async def set_status(self, who: Principal, participant_id: str, status: str) -> ParticipantView:
        """Operator: suspend or reinstate a participant. A suspended participant's signed requests are refused
        (403 participant_suspended) from the next request on, in every process sharing the database: this one's
        key cache hears it through `key_changed`, the others' through PostgreSQL NOTIFY (migration 0950)."""
        who.require_role("operator", action="suspend or reinstate participants")
        async with self.sessions.begin() as session:
            row = await session.get(Participant, participant_id, with_for_update=True)
            if row is None:
                raise UnknownParticipantError(f"no participant {participant_id}", field="id")
            row.status = status
        for drop in self.key_changed:
            drop(row.key_id)
        return participant_view(row)

    async def principal_by_key_id(self, key_id: str) -> Principal | None:
        """The participant holding the key with this id, or None. On PostgreSQL one statement alone (the key cache's
        miss path: every site's first request to each process after a start)."""
        rows = await fetch_alone(self.sessions, _PRINCIPAL_BY_KEY, {"principal_key_id": key_id})
        if rows is not None:
            return Principal(**{name: rows[0][name] for name in _PRINCIPAL_COLUMNS}) if rows else None
        async with self.sessions() as session:
            row = (await session.execute(select(Participant).where(Participant.key_id == key_id))).scalar_one_or_none()
        return None if row is None else principal_of(row)

    async def remember_nonce(self, key_id: str, nonce: str, created: int, now: int | None = None) -> None:
        """Store (key id, nonce) until the signature could no longer be accepted; a second use is a replay."""
        await self.nonce_store.remember_now(self.sessions, NonceClaim(key_id, nonce, created), now)
