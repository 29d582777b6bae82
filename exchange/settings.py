"""Service settings read once from the environment (HETEX_*) and passed to the composition root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from identifiers.errors import ValidationError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./hetex.db"


def normalize_database_url(url: str) -> str:
    """Map plain `sqlite:///` and `postgresql://` URLs onto the async drivers hetex ships with."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise ValidationError(
        f"unsupported database URL scheme in {url.split('://', 1)[0]!r}: use sqlite:/// or postgresql://",
        field="HETEX_DATABASE_URL",
    )


class Settings(BaseModel):
    """Everything the service needs to start; no secrets other than paths to key files."""

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    authority: str = "HX"
    origin: str = "hetex.example/log"
    public_base_url: str | None = None  # this exchange's origin: signed @target-uri values must start with it
    dev: bool = False  # development only: without public_base_url, @target-uri is the URL as received
    key_dir: Path = Path(".hetex/keys")
    exports_dir: Path = Path(".hetex/exports")
    signature_window_seconds: int = Field(default=300, ge=1)
    heartbeat_timeout_seconds: int = Field(default=900, ge=1)
    round_interval_seconds: float = Field(default=0, ge=0)
    round_slot_seconds: int = Field(default=300, ge=1, le=86_400)
    round_max_start_slots: int = Field(default=4, ge=1, le=96)
    shutdown_grace_seconds: float = Field(default=10, ge=0, le=3600)  # SIGTERM: drain requests / finish the round
    round_process: Literal["on", "off"] = "on"  # `hetex serve`: rounds in a child process (round_worker.py)
    checkpoint_interval_seconds: float = Field(default=10, ge=0)
    fee_bps: int = Field(default=100, ge=0, le=10_000)
    disclosure_min_orders: int = Field(default=3, ge=1)  # public class prices need this many contracted orders
    migrate_on_start: bool = True
    # several processes on one PostgreSQL (README "Several processes"): workers, the duties lease, job leases
    workers: int = Field(default=1, ge=1, le=64)
    lease_poll_seconds: float = Field(default=1, gt=0, le=60)
    job_lease_seconds: float = Field(default=30, ge=1, le=3600)
    # connection hygiene of `hetex serve` (README "Running the service"): slowloris and per-client caps
    http_head_timeout_seconds: float = Field(default=10, gt=0)
    http_body_timeout_seconds: float = Field(default=30, gt=0)
    http_keepalive_seconds: float = Field(default=15, gt=0)
    http_max_connections_per_address: int = Field(default=32, ge=1)
    # federation (DESIGN.md section 11; specs/federation.md)
    federation_summary_interval_seconds: float = Field(default=10, ge=0)
    federation_summary_ttl_seconds: int = Field(default=60, ge=1)
    federation_hold_ttl_seconds: int = Field(default=30, ge=1)
    federation_sync_interval_seconds: float = Field(default=10, ge=0)
    federation_forward_interval_seconds: float = Field(default=2, ge=0)
    federation_forward_after_seconds: float = Field(default=30, ge=0)
    federation_sweep_interval_seconds: float = Field(default=1, ge=0)
    federation_peer_timeout_seconds: float = Field(default=5, gt=0)
    federation_commit_delay_seconds: float = Field(default=0, ge=0)  # fault injection for partition tests
    federation_hub: str = Field(default="", pattern=r"^([A-Z0-9]{1,8})?$")  # authority of this exchange's hub
    federation_hub_mode: bool = False  # this exchange clears for member exchanges (exchange/services/hub.py)
    federation_hub_round_interval_seconds: float = Field(default=2, ge=0)
    federation_hub_coupled: bool = False  # the hub clears all our open orders before our own rounds (hub.py)

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("public_base_url must be an absolute http(s) URL without query or fragment")
        return value.rstrip("/")

    def origin_problem(self) -> str | None:
        """Why request signatures cannot be bound to this exchange's origin (serve refuses to start), or None."""
        if self.public_base_url or self.dev:
            return None
        return (
            "HETEX_PUBLIC_BASE_URL is not set: set it to the URL clients use to reach this exchange"
            " (e.g. https://hetex.example.cn), or pass --dev for local development"
        )

    @property
    def rounds_in_child(self) -> bool:
        """`hetex serve` runs whole rounds in a child process (`on`, the default), except on an in-memory SQLite
        database, which another process cannot open."""
        return self.round_process == "on" and not self.is_memory_sqlite

    @property
    def is_memory_sqlite(self) -> bool:
        """An in-memory SQLite database (private to one process)."""
        if not self.is_sqlite:
            return False
        path = self.database_url.split("://", 1)[1].lstrip("/")
        return path == "" or path.startswith(":memory:") or "mode=memory" in path

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded default."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read HETEX_* variables (names are the field names upper-cased), then apply overrides."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = "HETEX_" + name.upper()
            if key in env and env[key] != "":
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "settings"
            raise ValidationError(f"{name}: {first['msg']}", field="HETEX_" + name.upper()) from None
