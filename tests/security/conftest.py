"""Fixtures of the hostile-input suite: the real app on SQLite and PostgreSQL with one of every resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.exchange.registration_support import make_api
from tests.exchange.settlement_support import make_market
from tests.security.kit import HOUR, T0, World, make_world


@pytest.fixture
async def world(db: Any, aiohttp_client: Any, tmp_path: Path) -> World:
    """A market with a site, pools, an offer, orders, contracts, an operator and a regulator."""
    # no background publisher: the test database is one connection, shared with the requests under test
    api = await make_api(db, aiohttp_client, tmp_path, exports_dir=tmp_path / "exports", checkpoint_interval_seconds=0)
    return await make_world(await make_market(api, clock_at=T0 - HOUR))
