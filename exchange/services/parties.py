"""Who may see or act on a contract: its buyer, its provider, and (read-only) the operator and regulators."""

from __future__ import annotations

from typing import Protocol

from exchange.services.disclosure import READ_ALL_ROLES, may_read
from identifiers.errors import PermissionDeniedError

__all__ = [
    "READ_ALL_ROLES",
    "Caller",
    "NotContractPartyError",
    "OperatorOnlyError",
    "require_operator",
    "require_party",
]


class Caller(Protocol):
    """The authenticated participant as these services need it (exchange.services.principals.Principal)."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


class NotContractPartyError(PermissionDeniedError):
    """The caller is neither the buyer nor the provider of the contract."""

    code = "not_contract_party"


class OperatorOnlyError(PermissionDeniedError):
    """Only the exchange operator may do this."""

    code = "operator_only"


def require_party(caller: Caller, buyer_id: str, provider_id: str, *, read: bool = False) -> None:
    """Return None if the caller is a party (or, for reads, operator/regulator), else raise."""
    if caller.id in (buyer_id, provider_id):
        return
    if read and may_read(caller, (buyer_id, provider_id)):
        return
    raise NotContractPartyError("only the buyer or the provider of this contract may do this", reason="not_party")


def require_operator(caller: Caller | None) -> None:
    """Return None for the operator (None means an internal call), else raise OperatorOnlyError."""
    if caller is not None and caller.role != "operator":
        raise OperatorOnlyError("only the exchange operator may do this", reason="operator_only")
