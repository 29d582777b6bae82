"""Settings for a bench server with no periodic duty of its own (checkpoints, federation loops): what is measured
is the requests, not background work competing for the event loop or the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.settings import Settings


def quiet_settings(database_url: str, key_dir: Path, **fields: Any) -> Settings:
    """Settings for `database_url` with checkpoints and every federation loop off; `fields` set the rest."""
    return Settings(
        database_url=database_url,
        key_dir=key_dir,
        checkpoint_interval_seconds=0,
        federation_forward_interval_seconds=0,
        federation_summary_interval_seconds=0,
        federation_sync_interval_seconds=0,
        federation_sweep_interval_seconds=0,
        **fields,
    )
