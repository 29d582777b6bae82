"""Who is calling: the authenticated participant, role and ownership checks, and their refusals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from identifiers.errors import PermissionDeniedError

ROLES: Final = ("provider", "buyer", "regulator", "peer", "operator")
SELF_REGISTERED_ROLES: Final = ("provider", "buyer")


class RoleForbiddenError(PermissionDeniedError):
    """The caller's role may not perform this action (e.g. a regulator writing, a buyer posting offers)."""

    code = "role_forbidden"


class NotOwnerError(PermissionDeniedError):
    """The caller acts on a resource that belongs to another participant."""

    code = "not_owner"


class ParticipantSuspendedError(PermissionDeniedError):
    """The caller's participant record is not active."""

    code = "participant_suspended"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated participant, as the services see it (no secrets)."""

    id: str
    role: str
    name: str
    key_id: str
    public_key: str
    operator_code: str | None
    home_region: str | None
    status: str

    def require_role(self, *roles: str, action: str) -> None:
        """Return None if the caller has one of `roles`, else raise RoleForbiddenError (403)."""
        if self.status != "active":
            raise ParticipantSuspendedError(
                f"participant {self.id} is {self.status}", reason="participant_suspended", participant_id=self.id
            )
        if self.role not in roles:
            raise RoleForbiddenError(
                f"a {self.role} may not {action} (needs {' or '.join(roles)})",
                reason="role_forbidden",
                role=self.role,
            )

    def require_owner(self, owner_id: str, what: str) -> None:
        """Return None if the caller owns the resource, else raise NotOwnerError (403)."""
        if owner_id != self.id:
            raise NotOwnerError(f"{what} belongs to another participant", reason="not_owner")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The verbatim signed HTTP request that changed a registration, kept for regulators."""

    method: str
    target_uri: str
    body: bytes
    content_digest: str
    signature_input: str
    signature: str
