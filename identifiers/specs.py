"""Locate the packaged `specs/` directory (formats and data) from a checkout or an installed wheel."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "HETEX_SPECS_DIR"


def specs_dir() -> Path:
    """Return the specs directory: $HETEX_SPECS_DIR, else the repo's specs/, else installed hetex_specs/."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    package_root = Path(__file__).resolve().parents[1]
    in_repo = package_root / "specs"
    if in_repo.is_dir():
        return in_repo
    # A wheel force-includes specs/ as a top-level `hetex_specs` directory beside the packages.
    return package_root / "hetex_specs"
