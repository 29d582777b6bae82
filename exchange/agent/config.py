"""The agent's config file (TOML): exchange URL, site, node key, source, journal, timings."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from identifiers.errors import ValidationError as HetexValidationError

SOURCES = (
    "simulated",
    "kubernetes",
    "nvidia-smi",
    "rocm-smi",
    "amd-smi",
    "npu-smi",
    "cnmon",
    "hy-smi",
    "xpu-smi",
    "ixsmi",
    "mx-smi",
    "mthreads-gmi",
)
Positive = Annotated[float, Field(gt=0, le=86_400)]


class AgentConfigError(HetexValidationError):
    """The agent config file is missing, not TOML, or breaks a rule; the message names the key."""

    code = "agent_config_invalid"


class AgentConfig(BaseModel):
    """One node agent: which site it speaks for, with which key, reading which device source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exchange_url: str = Field(pattern=r"^https?://")
    site: str = Field(min_length=8, description="the site CRI this node reports for")
    key: Path = Field(description="the node key (the provider's Ed25519 private key file)")
    journal: Path = Field(description="the journal file (SQLite, WAL)")
    meter_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    source: Literal[SOURCES] = "nvidia-smi"  # type: ignore[valid-type]
    source_file: Path | None = Field(default=None, description="simulated: the state file; a tool: saved output")
    kubernetes_node: str | None = None
    model_overrides: dict[str, str] = Field(default_factory=dict, description="device-plugin resource -> model")
    heartbeat_seconds: Positive = 60
    scan_seconds: Positive = 15
    period_seconds: int = Field(default=300, ge=10, le=86_400)
    send_batch: int = Field(default=50, ge=1, le=500)
    usage_batch: Literal["auto", "on", "off"] = Field(
        default="auto", description="POST /v1/usage/batch (auto: when the exchange has it, else one per request)"
    )
    journal_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    keep_sent: int = Field(default=10_000, ge=0)
    auto_confirm: bool = False
    manage_offers: bool = True
    skew_alarm_seconds: Positive = 5
    request_timeout: Positive = 10
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics endpoint")

    @model_validator(mode="after")
    def _source_needs(self) -> AgentConfig:
        if self.source == "simulated" and self.source_file is None:
            raise ValueError("source_file: the simulated source reads its state from a file")
        return self

    @property
    def meter(self) -> str:
        """The meter id in usage reports (default: the site's code)."""
        if self.meter_id:
            return self.meter_id
        parts = self.site.split(":")
        return f"agent-{parts[4]}" if len(parts) > 4 else "agent"


def load_config(path: Path) -> AgentConfig:
    """Parse and check the config file; AgentConfigError names the first bad key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentConfigError(f"config file {path} not found", field="config") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AgentConfigError(f"config file {path}: {exc}", field="config") from None
    base = path.parent
    for name in ("key", "journal", "source_file"):
        value = raw.get(name)
        if isinstance(value, str) and not Path(value).is_absolute():
            raw[name] = str(base / value)
    try:
        return AgentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise AgentConfigError(f"{path}: {where}: {first['msg']}", field=where) from None
