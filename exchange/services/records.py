"""Signed registration records: every registration-changing request, stored verbatim in its transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.services.principals import SignedRequest
from exchange.storage.participants import RegistrationRecord
from identifiers.ids import new_id_str


def add_record(session: AsyncSession, participant_id: str, action: str, subject: str, signed: SignedRequest) -> None:
    """Add the signed request behind `action` on `subject` to the session (committed with the change)."""
    session.add(
        RegistrationRecord(
            id=new_id_str(),
            participant_id=participant_id,
            action=action,
            subject=subject,
            method=signed.method,
            target_uri=signed.target_uri,
            body=signed.body.decode("utf-8"),
            content_digest=signed.content_digest,
            signature_input=signed.signature_input,
            signature=signed.signature,
        )
    )
