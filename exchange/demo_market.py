"""The market `hetex demo` builds: providers with sites and pools in eight regions, buyers and their orders.

Pure data and small helpers (no I/O). Prices are integer fen per device-hour (100 fen = 1 yuan), chosen
near published Chinese rental prices so the figures read sensibly; every model has an SCU rating in the
catalogue (needed for SCU orders and compute-tier billing). Names are fictional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOUR = 3600
DAY = 86_400
ALL_MODES = ("per_minute", "compute_tier", "subscription", "project")


@dataclass(frozen=True)
class PoolPlan:
    """A pool to declare and the offer to post for it."""

    model: str
    devices: int
    ask_fen: int
    devices_per_node: int = 8
    billing_modes: tuple[str, ...] = ALL_MODES


@dataclass(frozen=True)
class SitePlan:
    """A data-centre node of a provider."""

    region: str
    name: str
    pools: tuple[PoolPlan, ...]
    pue: str = "1.20"
    green_share: str = "0.45"


@dataclass(frozen=True)
class ProviderPlan:
    """A provider (its own Ed25519 key) with its sites."""

    name: str
    home_region: str
    sites: tuple[SitePlan, ...]


@dataclass(frozen=True)
class OrderPlan:
    """A buyer's order: a label for the tables and the body sent (times relative to the demo start)."""

    label: str
    wave: int
    body: dict[str, Any]
    start_after: int = 0
    start_within: int = 15 * 60
    expect_fill: bool = True

    def spec(self, now: int) -> dict[str, Any]:
        """The POST /v1/orders body with absolute start window."""
        return {**self.body, "start_earliest": now + self.start_after, "start_latest": now + self.start_within}


@dataclass(frozen=True)
class BuyerPlan:
    """A buyer (its own key, a home region) and its orders."""

    name: str
    home_region: str
    orders: tuple[OrderPlan, ...] = field(default_factory=tuple)


PROVIDERS: tuple[ProviderPlan, ...] = (
    ProviderPlan(
        "Saihan Compute",
        "CN-NM",
        (
            SitePlan(
                "CN-NM", "Ulanqab A", (PoolPlan("NV-H100-SXM", 64, 1650), PoolPlan("HW-910C", 64, 1150)), "1.15", "0.62"
            ),
        ),
    ),
    ProviderPlan(
        "Qianling Cloud",
        "CN-GZ",
        (
            SitePlan(
                "CN-GZ",
                "Gui'an 1",
                (PoolPlan("NV-H20", 32, 620), PoolPlan("HW-910C", 32, 1100), PoolPlan("CAM-MLU370-X8", 16, 240)),
                "1.22",
                "0.55",
            ),
        ),
    ),
    ProviderPlan(
        "Shapotou DC",
        "CN-NX",
        (
            SitePlan(
                "CN-NX",
                "Zhongwei 2",
                (PoolPlan("NV-A100-80G-SXM", 32, 780), PoolPlan("MT-S4000", 16, 230)),
                "1.18",
                "0.58",
            ),
        ),
    ),
    ProviderPlan(
        "Longxi Compute",
        "CN-GS",
        (
            SitePlan(
                "CN-GS", "Qingyang 1", (PoolPlan("IX-BI-V100", 16, 190), PoolPlan("HW-910C", 16, 1050)), "1.20", "0.50"
            ),
        ),
    ),
    ProviderPlan(
        "Bashu AI Hub",
        "CN-SC",
        (
            SitePlan(
                "CN-SC", "Tianfu", (PoolPlan("NV-L40S", 16, 480), PoolPlan("NV-H200-SXM", 16, 2350)), "1.30", "0.70"
            ),
            SitePlan(
                "CN-CQ", "Liangjiang", (PoolPlan("AMD-MI300X", 8, 1900, billing_modes=("per_minute",)),), "1.32", "0.40"
            ),
        ),
    ),
    ProviderPlan(
        "Huangpu GPU",
        "CN-SH",
        (
            SitePlan(
                "CN-SH", "Lingang", (PoolPlan("NV-H100-SXM", 16, 1950), PoolPlan("NV-H20", 16, 720)), "1.35", "0.25"
            ),
        ),
    ),
    ProviderPlan(
        "Yanshan Data",
        "CN-BJ",
        (SitePlan("CN-BJ", "Yizhuang", (PoolPlan("NV-A100-80G-SXM", 16, 880),), "1.33", "0.20"),),
    ),
)

BUYERS: tuple[BuyerPlan, ...] = (
    BuyerPlan(
        "Pujiang LLM Lab",
        "CN-SH",
        (
            OrderPlan(
                "pretrain gang: 8 x H100/H200, one node",
                1,
                {
                    "quantity_devices": 8,
                    "models": ["NV-H100-SXM", "NV-H200-SXM"],
                    "limit_fen_per_device_hour": {"NV-H100-SXM": 2200, "NV-H200-SXM": 2700},
                    "all_or_nothing": True,
                    "same_model": True,
                    "colocation": "site",
                    "max_pools": 1,
                    "duration_seconds": 8 * HOUR,
                    "billing_mode": "per_minute",
                },
            ),
            OrderPlan(
                "fine-tune: 40 SCU of CUDA >= 80 GB",
                1,
                {
                    "quantity_scu": "40",
                    "constraints": {"stack": ["CUDA"], "min_memory_gb": 80},
                    "limit_fen_per_scu_hour": 700,
                    "all_or_nothing": False,
                    "duration_seconds": 24 * HOUR,
                    "billing_mode": "compute_tier",
                    "billing_terms": {"tier_table": "standard"},
                },
            ),
            OrderPlan(
                "MI300X burst: 8 devices in CN-CQ",
                2,
                {
                    "quantity_devices": 8,
                    "models": ["AMD-MI300X"],
                    "regions": ["CN-CQ"],
                    "limit_fen_per_device_hour": {"AMD-MI300X": 2100},
                    "duration_seconds": 10 * HOUR,
                    "billing_mode": "per_minute",
                },
            ),
        ),
    ),
    BuyerPlan(
        "Lingnan Vision",
        "CN-GD",
        (
            OrderPlan(
                "inference: 16 domestic, <= 15 ms from CN-GD",
                1,
                {
                    "quantity_devices": 16,
                    "constraints": {"domestic_only": True, "min_memory_gb": 48},
                    "max_latency_ms": 15,
                    "limit_fen_per_device_hour": {"*": 1400},
                    "all_or_nothing": False,
                    "min_fill_devices": 8,
                    "duration_seconds": 30 * DAY,
                    "billing_mode": "subscription",
                    "billing_terms": {"period": "monthly"},
                },
            ),
            OrderPlan(
                "evaluation: 12 SCU, starts in 10-30 min",
                2,
                {
                    "quantity_scu": "12",
                    "models": ["NV-H20", "HW-910C", "NV-L40S"],
                    "limit_fen_per_scu_hour": 500,
                    "all_or_nothing": False,
                    "duration_seconds": 48 * HOUR,
                    "billing_mode": "compute_tier",
                    "billing_terms": {"tier_table": "reserved"},
                },
                start_after=10 * 60,
                start_within=30 * 60,
            ),
        ),
    ),
    BuyerPlan(
        "Jingcheng Gov Cloud",
        "CN-BJ",
        (
            OrderPlan(
                "sovereign project: 16 x 910C/A100 in BJ/NM/HE",
                1,
                {
                    "quantity_devices": 16,
                    "models": ["HW-910C", "NV-A100-80G-SXM"],
                    "regions": ["CN-BJ", "CN-NM", "CN-HE"],
                    "limit_fen_per_device_hour": {"HW-910C": 1500, "NV-A100-80G-SXM": 1000},
                    "same_model": True,
                    "duration_seconds": 14 * DAY,
                    "billing_mode": "project",
                    "billing_terms": {
                        "fixed_price_fen": 6_988_800,
                        "milestones": [
                            {"name": "data preparation", "share_bps": 2500},
                            {"name": "training", "share_bps": 6000},
                            {"name": "acceptance", "share_bps": 1500},
                        ],
                    },
                },
            ),
        ),
    ),
    BuyerPlan(
        "Qiantang AI",
        "CN-ZJ",
        (
            OrderPlan(
                "batch inference: 24 x MTT/Cambricon/Iluvatar",
                1,
                {
                    "quantity_devices": 24,
                    "models": ["MT-S4000", "CAM-MLU370-X8", "IX-BI-V100"],
                    "limit_fen_per_device_hour": {"*": 320},
                    "all_or_nothing": False,
                    "min_fill_devices": 8,
                    "duration_seconds": 12 * HOUR,
                    "billing_mode": "per_minute",
                },
            ),
        ),
    ),
    BuyerPlan(
        "Rongcheng Games",
        "CN-SC",
        (
            OrderPlan(
                "rendering: 8 x L40S <= 10 ms from CN-SC",
                1,
                {
                    "quantity_devices": 8,
                    "models": ["NV-L40S"],
                    "max_latency_ms": 10,
                    "limit_fen_per_device_hour": {"NV-L40S": 600},
                    "duration_seconds": 6 * HOUR,
                    "billing_mode": "per_minute",
                },
            ),
        ),
    ),
    BuyerPlan(
        "Bargain Capital",
        "CN-HB",
        (
            OrderPlan(
                "low bid: 8 x H100 at 9 yuan/h",
                1,
                {
                    "quantity_devices": 8,
                    "models": ["NV-H100-SXM"],
                    "limit_fen_per_device_hour": {"NV-H100-SXM": 900},
                    "duration_seconds": 8 * HOUR,
                    "billing_mode": "per_minute",
                },
                expect_fill=False,
            ),
        ),
    ),
)


def usage_periods(mode: str, start: int, end: int) -> list[tuple[int, int]]:
    """Meter periods a node reports for a contract: every 2 h (per-minute), 6 h (compute tier), one
    report for the whole span (subscription and project: availability only)."""
    step = {"per_minute": 2 * HOUR, "compute_tier": 6 * HOUR}.get(mode)
    if step is None:
        return [(start, end)]
    out = []
    t = start
    while t < end:
        out.append((t, min(t + step, end)))
        t += step
    return out
