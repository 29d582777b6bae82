"""Shared paths for federation tests (vectors live in specs/vectors, copied from public sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[2] / "specs" / "vectors"


@pytest.fixture
def vectors() -> Path:
    """Root of specs/vectors."""
    return VECTORS
