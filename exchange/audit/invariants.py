"""Economic invariants a lying exchange could break while signing everything it writes (pure: standard library).

Checked over the records of one bundle, in log order: no signed payload twice; one settlement per contract
period unless later ones are corrections; a correction names the latest settlement of its period and carries
exactly its figures in `detail.superseded` (so the totals net it out); no settlement id twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The figures a correction restates from the settlement it supersedes (exchange/services/settlement.py).
SUPERSEDED_FIGURES = ("buyer_debit_fen", "provider_credit_fen", "fee_fen", "device_minutes")


@dataclass
class Violation:
    """One broken invariant: a stable code and what is wrong."""

    code: str
    message: str


@dataclass
class _Settled:
    settlement_id: str
    index: int
    figures: dict[str, Any]


@dataclass
class Invariants:
    """Feed every record in log order with see(); memory: 16 bytes per record plus one entry per period."""

    complete: bool
    _payloads: set[bytes] = field(default_factory=set)
    _periods: dict[tuple[str, Any], _Settled] = field(default_factory=dict)
    _ids: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def see(self, index: int, payload_type: str, payload: bytes, obj: Mapping[str, Any], kind: str) -> list[Violation]:
        """Check one record; return what it breaks."""
        out: list[Violation] = []
        digest = hashlib.sha256(payload_type.encode() + b"\n" + payload).digest()[:16]
        if digest in self._payloads:
            out.append(Violation("entry_duplicated", "the same signed record is already in the log at a lower index"))
        self._payloads.add(digest)
        if kind == "settlement":
            out.extend(self._settlement(index, obj))
        return out

    def _settlement(self, index: int, obj: Mapping[str, Any]) -> list[Violation]:
        sid, cid, start = obj.get("settlement_id"), obj.get("contract_id"), obj.get("period_start")
        if not isinstance(sid, str) or not isinstance(cid, str) or not isinstance(start, int):
            return []  # not a settlement of a contract period: nothing to check
        period = (cid, start)
        out: list[Violation] = []
        if sid in self._ids:
            out.append(Violation("settlement_id_duplicated", f"settlement {sid} is logged twice"))
        self._ids[sid] = period
        figures = {k: obj.get(k) for k in SUPERSEDED_FIGURES}
        prior = self._periods.get(period)
        supersedes = obj.get("supersedes_id")
        detail = obj.get("detail")
        restated = detail.get("superseded") if isinstance(detail, Mapping) else None
        if supersedes is None:
            if prior is not None:
                out.append(
                    Violation(
                        "settlement_period_twice",
                        f"contract {cid} period {start} was already settled by {prior.settlement_id} "
                        f"(log index {prior.index}) and this is not a correction",
                    )
                )
            if restated is not None:
                out.append(Violation("correction_reference_missing", "detail.superseded without supersedes_id"))
        elif prior is None:
            if self.complete:
                out.append(
                    Violation(
                        "correction_reference_missing",
                        f"corrects {supersedes}, which is not an earlier settlement of contract {cid} period {start}",
                    )
                )
        elif supersedes != prior.settlement_id:
            out.append(
                Violation(
                    "correction_reference_invalid",
                    f"corrects {supersedes}, but the latest settlement of this period is {prior.settlement_id}",
                )
            )
        elif not isinstance(restated, Mapping) or dict(restated) != prior.figures:
            out.append(
                Violation(
                    "correction_not_netting",
                    f"detail.superseded does not restate the figures of {prior.settlement_id} {prior.figures}",
                )
            )
        self._periods[period] = _Settled(sid, index, figures)
        return out
