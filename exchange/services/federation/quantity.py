"""How much of a local order the buyer's side still needs, in devices or, for an SCU order, in SCU.

An SCU order (quantity in A100-equivalents) can be filled by several exchanges' pools: each owner is asked
for the SCU still missing and converts it to devices of one model with its catalogue SCU, so a hold may
exceed what was asked by less than one device. The order is filled across exchanges all or nothing in one
pass (local clearing treats an SCU order as one quantity), and `orders.filled_scu` records what was filled,
so neither a later pass nor a local round fills it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from exchange.storage.orders import Order
from identifiers.errors import ValidationError

#: the least SCU an owner may hold for a split SCU order (one device of any model with an SCU is more)
SCU_FLOOR = Decimal("0.0001")
MAX_DEVICES = 1_000_000


@dataclass(frozen=True)
class Need:
    """What is still wanted (`remaining`) and the least worth committing (`minimum`), in devices or SCU."""

    remaining: Decimal
    minimum: Decimal
    scu: Mapping[str, Decimal | None] | None = None  # the catalogue SCU per model, for an SCU order

    @classmethod
    def of(cls, order: Order, terms: Mapping[str, Any], scu: Mapping[str, Decimal | None]) -> Need:
        """The need of an open order (devices, or SCU when terms carry quantity_scu)."""
        if terms["quantity_scu"] is not None:
            remaining = terms["quantity_scu"] - Decimal(order.filled_scu or 0)
            return cls(remaining, remaining, scu)
        remaining = Decimal((order.quantity_devices or 0) - order.filled_devices)
        if terms["all_or_nothing"]:
            return cls(remaining, remaining)
        return cls(remaining, Decimal(max(1, int(terms["min_fill_devices"] or 1) - order.filled_devices)))

    def show(self, amount: Decimal) -> int | str:
        """An amount for a JSON answer: whole devices, or SCU as decimal text."""
        return str(amount) if self.scu is not None else int(amount)

    def ask(self, want: Decimal, models: Sequence[str] | None, *, all_of_it: bool) -> dict[str, Any]:
        """The quantity fields of an order_offer asking for `want` (all of it from this owner, or any part)."""
        if self.scu is None:
            return {"devices_max": int(want), "devices_min": int(self.minimum) if all_of_it else 1}
        per = [s for m, s in self.scu.items() if s is not None and s > 0 and (models is None or m in models)]
        cap = min(MAX_DEVICES, int((want / min(per)).to_integral_value(rounding=ROUND_CEILING))) if per else 1
        return {
            "devices_max": cap,
            "devices_min": 1,
            "quantity_scu": str(want),
            "scu_min": str(want if all_of_it else SCU_FLOOR),
        }

    def planned(self, plan: Sequence[tuple[str, int, str, str]]) -> dict[str, Decimal]:
        """SCU per owner of a hub's plan for this SCU order ((owner, devices, model, region), ...), checked to
        fill it exactly: one model with a catalogue SCU, reaching what is still missing, and a device fewer
        would not (ValidationError naming `routes` otherwise, so nothing is asked of any owner)."""
        assert self.scu is not None
        models = {model for _o, _n, model, _r in plan}
        per = self.scu.get(next(iter(models))) if len(models) == 1 else None
        if per is None or per <= 0:
            raise ValidationError("an SCU order is routed on one model with a catalogue SCU", field="routes")
        out: dict[str, Decimal] = {}
        for owner, n, _m, _r in plan:
            out[owner] = out.get(owner, Decimal(0)) + per * n
        total = sum(out.values(), Decimal(0))
        if total < self.remaining or total - per >= self.remaining:
            raise ValidationError(
                f"routes give {total} SCU for {self.remaining} missing (not the least whole number of devices)",
                field="routes",
            )
        return out

    def held(self, lines: Sequence[Mapping[str, Any]], want: Decimal) -> Decimal:
        """The amount a hold's lines give; ValidationError when it is more than `want` (for SCU: more than
        the least whole number of devices reaching it) or a line's model has no catalogue SCU."""
        if self.scu is None:
            got = Decimal(sum(int(line["devices"]) for line in lines))
            if got > want:
                raise ValidationError("held more devices than asked", field="devices")
            return got
        got, largest = Decimal(0), Decimal(0)
        for line in lines:
            per = self.scu.get(str((line.get("body") or {}).get("model")))
            if per is None or per <= 0:
                raise ValidationError("held a model without a catalogue SCU for an SCU order", field="model")
            got += per * int(line["devices"])
            largest = max(largest, per)
        if got - largest >= want:
            raise ValidationError("held more SCU than asked (a device fewer would still reach it)", field="devices")
        return got


def scu_of(bodies: Sequence[Mapping[str, Any]], scu: Mapping[str, Decimal | None]) -> Decimal:
    """SCU of contract bodies (devices x catalogue SCU of their model)."""
    return sum((Decimal(scu.get(str(b["model"])) or 0) * int(b["devices"]) for b in bodies), Decimal(0))
