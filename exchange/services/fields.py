"""Field types shared by the request and response models (bounded so storage never overflows; ASCII-only
patterns; strict: no coercion of "12" to 12, 5.0 to 5 or "true" to True)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema

#: Largest integer every JSON peer and RFC 8785 represent exactly.
MAX_SAFE_INT: Final = 2**53 - 1
MAX_DEVICES: Final = 1_000_000
MAX_FEN: Final = 10**13

#: The config of every request model: unknown members refused, no type coercion.
REQUEST_MODEL: Final = ConfigDict(extra="forbid", strict=True)

#: Free text: no control characters, and at least one character that is not white space.
_TEXT = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_TEXT)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=_TEXT)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
RegionCode = Annotated[str, StringConstraints(min_length=4, max_length=8, pattern=r"^[A-Z]{2}-[A-Z0-9]{1,3}$")]
EpochSeconds = Annotated[StrictInt, Field(ge=0, le=MAX_SAFE_INT)]
DeviceCount = Annotated[StrictInt, Field(ge=1, le=MAX_DEVICES)]
PositiveFen = Annotated[StrictInt, Field(ge=1, le=MAX_FEN)]
Seconds = Annotated[StrictInt, Field(ge=1, le=10 * 366 * 86400)]
Uuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]


def _decimal_pattern(int_digits: int, frac_digits: int) -> str:
    return rf"^[0-9]{{1,{int_digits}}}(\.[0-9]{{1,{frac_digits}}})?$"


def ascii_decimal(int_digits: int, frac_digits: int, example: str) -> BeforeValidator:
    """Validator of a decimal given as a JSON string of ASCII digits (`int_digits` before, up to `frac_digits`
    after the point): no sign, spaces, exponent or Unicode digits; parsed to Decimal (never a float)."""
    compiled = re.compile(_decimal_pattern(int_digits, frac_digits), re.ASCII)

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f'must be a decimal string such as "{example}"')
        if not compiled.fullmatch(value):
            raise ValueError(f'must be ASCII digits with an optional point, such as "{example}"')
        return Decimal(value)

    return BeforeValidator(parse)


def decimal_schema(int_digits: int, frac_digits: int, example: str) -> WithJsonSchema:
    """The OpenAPI schema of an `ascii_decimal` field: exactly the pattern the server checks."""
    pattern = _decimal_pattern(int_digits, frac_digits)
    return WithJsonSchema({"type": "string", "pattern": pattern, "examples": [example]})
