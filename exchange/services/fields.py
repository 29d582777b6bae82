"""Field types shared by the request and response models (bounded so storage never overflows; ASCII-only
patterns; strict: no coercion of "12" to 12, 5.0 to 5 or "true" to True)."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema

#: Largest integer every JSON peer and RFC 8785 represent exactly.
MAX_SAFE_INT: Final = 2**53 - 1
MAX_DEVICES: Final = 1_000_000
MAX_FEN: Final = 10**13
#: decimal quantities (SCU, TFLOPS): ASCII digits, at most 12 before and 4 after the point, at most 10^9
DECIMAL_INT_DIGITS: Final = 12
DECIMAL_FRAC_DIGITS: Final = 4
DECIMAL_MAX: Final = Decimal(10) ** 9

#: The config of every request model: unknown members refused, no type coercion.
REQUEST_MODEL: Final = ConfigDict(extra="forbid", strict=True)

#: Free text: no control characters, and at least one character that is not white space.
_TEXT = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
NAME_MAX: Final = 200
Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX, pattern=_TEXT)]
_NAME_RE: Final = re.compile(_TEXT)


def is_valid_name(text: str) -> bool:
    """The API's rule for a participant name (`Name`), for callers outside request models (`hetex admin`)."""
    return 1 <= len(text) <= NAME_MAX and _NAME_RE.match(text) is not None


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


def parse_ascii_decimal(text: object, int_digits: int, frac_digits: int) -> Decimal | None:
    """`text` as a Decimal if it is a string of ASCII digits (`int_digits` before, up to `frac_digits` after an
    optional point: no sign, spaces, exponent or Unicode digits), else None. The one decimal rule of the API
    and of peer messages."""
    if not isinstance(text, str) or not _decimal_re(int_digits, frac_digits).fullmatch(text):
        return None
    return Decimal(text)


@lru_cache(maxsize=16)
def _decimal_re(int_digits: int, frac_digits: int) -> re.Pattern[str]:
    return re.compile(_decimal_pattern(int_digits, frac_digits), re.ASCII)


def ascii_decimal(int_digits: int, frac_digits: int, example: str) -> BeforeValidator:
    """Validator of a decimal given as a JSON string of ASCII digits (`int_digits` before, up to `frac_digits`
    after the point): no sign, spaces, exponent or Unicode digits; parsed to Decimal (never a float)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f'must be a decimal string such as "{example}"')
        parsed = parse_ascii_decimal(value, int_digits, frac_digits)
        if parsed is None:
            raise ValueError(f'must be ASCII digits with an optional point, such as "{example}"')
        return parsed

    return BeforeValidator(parse)


def decimal_schema(int_digits: int, frac_digits: int, example: str) -> WithJsonSchema:
    """The OpenAPI schema of an `ascii_decimal` field: exactly the pattern the server checks."""
    pattern = _decimal_pattern(int_digits, frac_digits)
    return WithJsonSchema({"type": "string", "pattern": pattern, "examples": [example]})
