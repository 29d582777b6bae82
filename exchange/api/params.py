"""Query and path parameters declared once: handlers parse with the same declaration the OpenAPI spec
is generated from, so a constraint cannot differ between the published document and the server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from aiohttp import web

from identifiers.cri import parse_cri
from identifiers.errors import CriError, HetexError, ValidationError

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_INT = re.compile(r"-?[0-9]{1,19}")
MAX_INT64 = (1 << 63) - 1
T = TypeVar("T")


class EmptyQueryValueError(HetexError):
    """A query parameter was given with no value (`?status=`): 400 naming it."""

    code = "empty_query_value"


@dataclass(frozen=True)
class Param(Generic[T]):
    """One query or path parameter: name, where it is, its description and whether it is required."""

    name: str
    where: Literal["query", "path"]
    description: str
    required: bool = False

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the value."""
        return {"type": "string"}

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        return {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "schema": self.schema(),
            "description": self.description,
        }

    def text(self, request: web.Request) -> str | None:
        """The raw value (None when absent and optional); empty or missing-but-required is refused."""
        if self.where == "path":
            return request.match_info[self.name]
        values = request.query.getall(self.name, [])
        if not values:
            if self.required:
                raise ValidationError(f"query parameter {self.name} is required", field=self.name)
            return None
        if len(values) > 1:
            raise ValidationError(f"query parameter {self.name} is given more than once", field=self.name)
        if values[0] == "":
            raise EmptyQueryValueError(f"query parameter {self.name} has an empty value", field=self.name)
        return values[0]

    def parse(self, request: web.Request) -> T | None:
        """The value, None when absent, or a HetexError naming the parameter."""
        raise NotImplementedError


@dataclass(frozen=True)
class IntParam(Param[int]):
    """An integer in [lo, hi], written in ASCII decimal digits."""

    lo: int = 0
    hi: int = MAX_INT64

    def schema(self) -> dict[str, Any]:
        """Integer with its bounds."""
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}

    def parse(self, request: web.Request) -> int | None:
        """The value, None when absent, or ValidationError naming the parameter."""
        raw = self.text(request)
        if raw is None:
            return None
        if not _INT.fullmatch(raw):
            raise ValidationError(f"{self.name} must be an integer (ASCII digits)", field=self.name)
        value = int(raw)
        if not self.lo <= value <= self.hi:
            raise ValidationError(f"{self.name} must be between {self.lo} and {self.hi}", field=self.name)
        return value

    def value(self, request: web.Request, default: int) -> int:
        """The value, or `default` when absent."""
        got = self.parse(request)
        return default if got is None else got


@dataclass(frozen=True)
class ChoiceParam(Param[str]):
    """One of a fixed set of strings."""

    choices: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        """String enum."""
        return {"type": "string", "enum": list(self.choices)}

    def parse(self, request: web.Request) -> str | None:
        """The value, None when absent, or ValidationError naming the parameter."""
        raw = self.text(request)
        if raw is not None and raw not in self.choices:
            raise ValidationError(f"{self.name} must be one of {', '.join(self.choices)}", field=self.name)
        return raw


@dataclass(frozen=True)
class TextParam(Param[str]):
    """A string matching `pattern` (anchored), at most `max_length` characters."""

    pattern: str = r"^.+$"
    max_length: int = 100
    hint: str = "text"

    def schema(self) -> dict[str, Any]:
        """String with its pattern and length bounds."""
        return {"type": "string", "pattern": self.pattern, "minLength": 1, "maxLength": self.max_length}

    def parse(self, request: web.Request) -> str | None:
        """The value, None when absent, or ValidationError naming the parameter."""
        raw = self.text(request)
        if raw is None:
            return None
        if len(raw) > self.max_length or not re.fullmatch(self.pattern.removeprefix("^").removesuffix("$"), raw):
            raise ValidationError(f"{self.name}: not {self.hint}", field=self.name)
        return raw

    def value(self, request: web.Request) -> str:
        """The value of a required (or path) parameter."""
        got = self.parse(request)
        assert got is not None  # required parameters raise in text()
        return got


def uuid_param(name: str, where: Literal["query", "path"], description: str) -> TextParam:
    """A record id (UUID, lower-case hex)."""
    return TextParam(name, where, description, pattern=UUID_PATTERN, max_length=36, hint="an id (UUID, lower-case hex)")


ID = uuid_param("id", "path", "record id (UUIDv7, lower-case)")

_SEP, _DASH = "[:\uff1a]", "[-\uff0d]"
_CODE = "[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{2,8}"
CRI_PATTERN = (
    f"^[Cc][Rr][Ii]1{_SEP}[A-Za-z0-9]{{1,8}}{_SEP}[A-Za-z]{{2}}{_DASH}[A-Za-z0-9]{{1,3}}{_SEP}{_CODE}{_SEP}{_CODE}"
    f"(?:{_SEP}{_CODE}{_SEP}[A-Za-z]{{2,4}}(?:{_DASH}[A-Za-z0-9]{{1,10}}){{1,3}})?{_SEP}[A-Za-z0-9]$"
)


@dataclass(frozen=True)
class CriParam(TextParam):
    """A CRI: refused with invalid_cri and the rule it breaks (parse_cri's reason) when off the pattern."""

    def parse(self, request: web.Request) -> str | None:
        """The value as given, or CriError naming the first rule it breaks."""
        try:
            return super().parse(request)
        except ValidationError:
            raw = self.text(request) or ""
            parse_cri(raw)  # raises CriError with the precise reason
            raise CriError(f"{raw!r} is not in the canonical CRI form", reason="bad_character") from None


CRI = CriParam(
    "cri",
    "path",
    "compute resource identifier (specs/cri.abnf), any case, full-width ':' and '-' allowed (NFKC); "
    "what a pattern cannot state is answered 422 invalid_cri with its `reason`: bad_check_character, "
    "unknown_region, unknown_model, bad_model (model code longer than 24)",
    pattern=CRI_PATTERN,
    max_length=100,
    hint="a CRI (specs/cri.abnf)",
)
