"""Field types shared by the request and response models (bounded so storage never overflows)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, StrictInt, StringConstraints

#: Largest integer every JSON peer and RFC 8785 represent exactly.
MAX_SAFE_INT: Final = 2**53 - 1
MAX_DEVICES: Final = 1_000_000
MAX_FEN: Final = 10**13

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=r"^[^\x00-\x1f\x7f]+$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
RegionCode = Annotated[str, StringConstraints(min_length=4, max_length=8, pattern=r"^[A-Z]{2}-[A-Z0-9]{1,3}$")]
EpochSeconds = Annotated[StrictInt, Field(ge=0, le=MAX_SAFE_INT)]
DeviceCount = Annotated[StrictInt, Field(ge=1, le=MAX_DEVICES)]
PositiveFen = Annotated[StrictInt, Field(ge=1, le=MAX_FEN)]
Seconds = Annotated[StrictInt, Field(ge=1, le=10 * 366 * 86400)]
Uuid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
