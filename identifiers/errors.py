"""Root of hetex domain errors: stable codes, optional field, no HTTP (each package subclasses it)."""

from __future__ import annotations

from typing import Any, ClassVar


class HetexError(Exception):
    """Base of every domain error; `code` is stable, `field` names the offending input when known."""

    code: ClassVar[str] = "hetex_error"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle whole (field and details too, whatever the subclass's constructor takes): a round run in a
        worker process raises its domain error in the server as it was."""
        return (_rebuild, (type(self), self.args), self.__dict__)

    def to_dict(self) -> dict[str, Any]:
        """Plain form for logs and problem bodies."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.details:
            out.update(self.details)
        return out


def _rebuild(cls: type[HetexError], args: tuple[Any, ...]) -> HetexError:
    """Unpickling side of HetexError.__reduce__: the instance without calling the subclass's constructor."""
    err = Exception.__new__(cls)
    err.args = args
    return err


class ValidationError(HetexError):
    """Input that breaks a documented rule."""

    code = "invalid_input"


class NotFoundError(HetexError):
    """A named thing does not exist."""

    code = "not_found"


class ConflictError(HetexError):
    """The request conflicts with current state."""

    code = "conflict"


class GoneError(HetexError):
    """A named thing existed and was deliberately ended (withdrawn): it is no longer served."""

    code = "gone"


class UnavailableError(HetexError):
    """The exchange cannot serve this request now for a reason on its side (retry later; not the caller's fault)."""

    code = "unavailable"
    retry_after_seconds: ClassVar[int] = 30


class AuthenticationError(HetexError):
    """The caller could not be authenticated (missing/bad/expired/replayed signature, unknown key)."""

    code = "unauthenticated"


class PermissionDeniedError(HetexError):
    """The caller is known but may not do this (wrong owner, wrong role)."""

    code = "forbidden"


class CriError(ValidationError):
    """A compute resource identifier (CRI) is malformed; `reason` names the exact rule it breaks."""

    code = "invalid_cri"

    def __init__(self, message: str, *, reason: str, field: str | None = "cri", **details: Any) -> None:
        super().__init__(message, field=field, reason=reason, **details)
        self.reason = reason


class UnknownModelError(NotFoundError):
    """An accelerator model code is not in the catalogue."""

    code = "unknown_model"


class UnknownRegionError(NotFoundError):
    """A region code is not one the exchange serves."""

    code = "unknown_region"


class CatalogueError(ValidationError):
    """The accelerator catalogue data breaks its schema; the message names the model and field."""

    code = "invalid_catalogue"


class RegionTableError(ValidationError):
    """The regions data breaks its schema; the message names the region and field."""

    code = "invalid_regions"
