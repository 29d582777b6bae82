"""Load the compute-tier table from the packaged specs/billing-tiers.yaml (read-only data file)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from exchange.billing.compute_tier import TierTable

TIERS_FILE = "billing-tiers.yaml"


def _specs_dir() -> Path:
    """$HETEX_SPECS_DIR, else specs/ beside the packages (checkout), else the wheel's hetex_specs/."""
    override = os.environ.get("HETEX_SPECS_DIR")
    if override:
        return Path(override)
    root = Path(__file__).resolve().parents[2]
    return root / "specs" if (root / "specs").is_dir() else root / "hetex_specs"


@functools.cache
def load_tier_table(path: Path | None = None) -> TierTable:
    """The validated tier table (cached per path)."""
    file = path or _specs_dir() / TIERS_FILE
    with open(file, encoding="utf-8") as fh:
        return TierTable.from_mapping(yaml.safe_load(fh))
