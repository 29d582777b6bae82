"""Web console sign-in: a signed request buys a one-time code; the code becomes an expiring browser session.

Security properties (specs/console.md): the private key never reaches the browser. `start` runs behind the
ordinary RFC 9421 authentication, so only the key holder gets a code; the code is single-use and lives
`CODE_SECONDS`; the session token it turns into is random (256 bits), sent only as an HttpOnly,
SameSite=Strict cookie, and stored only as its SHA-256 digest, as is the code. A session expires after
`SESSION_SECONDS`, can be revoked by its participant, and dies with the participant's suspension. The CSRF
token of a session is an HMAC of its token, so it needs no storage and changes with every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from exchange.services.participants import principal_of
from exchange.services.principals import Principal
from exchange.storage.base import now_s
from exchange.storage.participants import Participant
from exchange.storage.web import WebSession
from identifiers.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from identifiers.ids import new_id_str

CODE_SECONDS = 120
SESSION_SECONDS = 8 * 3600
#: Roles that may sign in to the console; peers are machines and have no pages.
CONSOLE_ROLES = ("provider", "buyer", "regulator", "operator")


class WebSessionRefusedError(AuthenticationError):
    """A sign-in code or session cookie that is unknown, used, expired or revoked."""

    code = "web_session_refused"


class CsrfError(PermissionDeniedError):
    """A browser write without the session's CSRF token."""

    code = "csrf_failed"


class UnknownWebSessionError(NotFoundError):
    """No session with this id belongs to the caller."""

    code = "unknown_web_session"


def digest(secret: str) -> str:
    """SHA-256 hex of a code or token (what the table stores)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_for(token: str) -> str:
    """The CSRF token of the session whose cookie token is `token`."""
    return hmac.new(token.encode(), b"hetex-console-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StartedSignIn:
    """A fresh one-time code (the caller turns it into a link)."""

    session_id: str
    code: str
    code_expires_at: int
    expires_at: int


@dataclass(frozen=True)
class BrowserSession:
    """A live browser session: who, which session, its CSRF token."""

    id: str
    principal: Principal
    csrf: str
    expires_at: int


def session_view(row: WebSession, now: int) -> dict[str, Any]:
    """A session as its participant sees it (no secrets)."""
    if row.revoked_at is not None:
        state = "revoked"
    elif row.activated_at is None:
        state = "pending" if row.code_expires_at > now else "unused"
    else:
        state = "active" if row.expires_at > now else "expired"
    return {
        "id": row.id,
        "state": state,
        "created_at": row.created_at,
        "activated_at": row.activated_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "user_agent": row.user_agent,
    }


class WebSessionService:
    """Creates, resolves, lists and revokes web console sessions."""

    def __init__(
        self,
        sessions: async_sessionmaker[DbSession],
        *,
        code_seconds: int = CODE_SECONDS,
        session_seconds: int = SESSION_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.code_seconds = code_seconds
        self.session_seconds = session_seconds

    async def start(self, who: Principal) -> StartedSignIn:
        """A one-time sign-in code for `who` (called behind a verified request signature)."""
        who.require_role(*CONSOLE_ROLES, action="sign in to the web console")
        now = now_s()
        code = secrets.token_urlsafe(32)
        row = WebSession(
            id=new_id_str(),
            participant_id=who.id,
            code_hash=digest(code),
            code_expires_at=now + self.code_seconds,
            expires_at=now + self.code_seconds + self.session_seconds,
            created_at=now,
        )
        async with self.sessions.begin() as session:
            session.add(row)
        return StartedSignIn(row.id, code, row.code_expires_at, row.expires_at)

    async def redeem(self, code: str, user_agent: str | None) -> tuple[str, BrowserSession]:
        """Turn a one-time code into a session; returns the cookie token and the session."""
        now = now_s()
        token = secrets.token_urlsafe(32)
        async with self.sessions.begin() as session:
            # one UPDATE claims the code, so two redemptions racing cannot both win
            claimed = await session.execute(
                update(WebSession)
                .where(
                    WebSession.code_hash == digest(code),
                    WebSession.activated_at.is_(None),
                    WebSession.revoked_at.is_(None),
                    WebSession.code_expires_at > now,
                )
                .values(
                    activated_at=now,
                    token_hash=digest(token),
                    expires_at=now + self.session_seconds,
                    user_agent=(user_agent or "")[:200] or None,
                )
                .returning(WebSession.id)
            )
            session_id = claimed.scalar_one_or_none()
            if session_id is None:
                raise WebSessionRefusedError(
                    "this sign-in link is unknown, used or expired: run `hetex login --web` again", field="code"
                )
        browser = await self.resolve(token)
        assert browser is not None
        return token, browser

    async def resolve(self, token: str | None) -> BrowserSession | None:
        """The live session of a cookie token, or None (unknown, expired, revoked, participant suspended)."""
        if not token or len(token) > 100:
            return None
        now = now_s()
        q = (
            select(WebSession, Participant)
            .join(Participant, Participant.id == WebSession.participant_id)
            .where(WebSession.token_hash == digest(token))
        )
        async with self.sessions() as session:
            found = (await session.execute(q)).first()
        if found is None:
            return None
        row, participant = found
        if row.revoked_at is not None or row.expires_at <= now or participant.status != "active":
            return None
        return BrowserSession(row.id, principal_of(participant), csrf_for(token), row.expires_at)

    async def list_for(self, who: Principal, limit: int = 50) -> list[dict[str, Any]]:
        """The caller's sessions, newest first."""
        now = now_s()
        q = (
            select(WebSession)
            .where(WebSession.participant_id == who.id)
            .order_by(WebSession.created_at.desc(), WebSession.id.desc())
            .limit(limit)
        )
        async with self.sessions() as session:
            return [session_view(r, now) for r in (await session.execute(q)).scalars()]

    async def revoke(self, who: Principal, session_id: str) -> dict[str, Any]:
        """Revoke one of the caller's sessions (idempotent)."""
        now = now_s()
        async with self.sessions.begin() as session:
            row = await session.get(WebSession, session_id)
            if row is None or row.participant_id != who.id:
                raise UnknownWebSessionError(f"no web session {session_id} of yours", field="id")
            if row.revoked_at is None:
                row.revoked_at = now
            return session_view(row, now)


def check_csrf(browser: BrowserSession, sent: str | None) -> None:
    """Return None if `sent` is the session's CSRF token, else raise CsrfError (403)."""
    if not sent or not hmac.compare_digest(sent, browser.csrf):
        raise CsrfError("this form lacks a valid CSRF token: reload the page and try again", field="csrf")
