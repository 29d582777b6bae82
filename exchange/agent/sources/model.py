"""What a device source reports: devices with their catalogue model code, health and utilisation."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from identifiers.errors import ValidationError


class SourceParseError(ValidationError):
    """A vendor tool's output that cannot be read as that tool's documented format; `tool` names it."""

    code = "agent_source_unparseable"

    def __init__(self, tool: str, message: str, **details: object) -> None:
        super().__init__(f"{tool}: {message}", field="source", tool=tool, **details)
        self.tool = tool


@dataclass(frozen=True)
class Device:
    """One accelerator seen on the node; `model` is the catalogue code, None when the product is not catalogued."""

    vendor: str
    index: int
    uid: str
    product: str
    model: str | None
    healthy: bool = True
    utilization_pct: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class Scan:
    """One reading of a source: the devices it saw (failed ones included, marked unhealthy)."""

    tool: str
    devices: tuple[Device, ...] = field(default_factory=tuple)

    def healthy_by_model(self) -> dict[str, int]:
        """Healthy, catalogued devices per model code (what the node can sell)."""
        out: dict[str, int] = {}
        for d in self.devices:
            if d.healthy and d.model is not None:
                out[d.model] = out.get(d.model, 0) + 1
        return out

    def unmapped(self) -> list[Device]:
        """Devices whose product name maps to no catalogue model."""
        return [d for d in self.devices if d.model is None]


ModelRules = Sequence[tuple[str, str]]


def map_model(product: str, rules: ModelRules) -> str | None:
    """The catalogue code of a product name: the first rule whose regex matches (case-insensitive)."""
    text = " ".join(product.split())
    for pattern, code in rules:
        if re.search(pattern, text, re.IGNORECASE):
            return code
    return None


def as_int(text: object) -> int | None:
    """An integer out of '87 %', '87', '87.4' or None for N/A-like values."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        return int(text) if text == text and abs(text) < 2**53 else None
    if not isinstance(text, str):
        return None
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    if m is None:
        return None
    return int(float(m.group(1)))


def clamp_pct(value: int | None) -> int | None:
    """A utilisation in 0..100, or None when the tool reported nonsense."""
    if value is None or value < 0 or value > 100:
        return None
    return value


def require_lines(tool: str, text: str) -> list[str]:
    """Non-empty stripped lines of `text`; refuses non-text (NUL bytes) as garbage."""
    if not isinstance(text, str):
        raise SourceParseError(tool, "output is not text")
    if "\x00" in text:
        raise SourceParseError(tool, "output contains NUL bytes")
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def scan_of(tool: str, devices: Iterable[Device]) -> Scan:
    """A Scan that refuses two devices with one uid (a parser bug or a mangled output)."""
    devs = tuple(devices)
    uids = [d.uid for d in devs]
    if len(set(uids)) != len(uids):
        raise SourceParseError(tool, "two devices report the same id")
    return Scan(tool, devs)
