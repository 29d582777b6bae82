"""Build a test app on the per-test rolled-back database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.api.app import create_app
from exchange.composition import Services, build_services
from exchange.settings import Settings


async def make_services(db: Any, tmp_path: Path, **settings: Any) -> Services:
    """Services wired to the test database `db` (see tests/conftest.py)."""
    cfg = Settings(database_url=db.url, key_dir=tmp_path / "keys", **settings)
    svc = await build_services(cfg, sessions=db.sessions)
    await svc.identity.init(exist_ok=True)  # `hetex admin init`: keys are created only explicitly
    return svc


async def serve(aiohttp_client: Any, svc: Services) -> Any:
    """Start the real app on a loopback test server; its URL becomes the exchange's public base URL (the
    origin signatures are bound to) unless the settings name one."""
    http = await aiohttp_client(create_app(svc))
    if svc.settings.public_base_url is None:
        svc.settings.public_base_url = str(http.make_url("")).rstrip("/")
    return http


async def make_client(aiohttp_client: Any, db: Any, tmp_path: Path, **settings: Any) -> Any:
    """An aiohttp test client of the real app."""
    svc = await make_services(db, tmp_path, **settings)
    return await serve(aiohttp_client, svc)
