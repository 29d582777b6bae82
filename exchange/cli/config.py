"""The client configuration file: `$XDG_CONFIG_HOME/hetex/config.toml` (default `~/.config/hetex/config.toml`)
with named profiles of url, key and role. Precedence: flag, then HETEX_* variable, then the profile."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from exchange.cli.errors import CliError

PROFILE_KEYS = ("url", "key", "role")
ROLES = ("provider", "buyer", "regulator", "operator")


def config_path() -> Path:
    """Where the config file lives ($HETEX_CONFIG overrides the XDG location)."""
    explicit = os.environ.get("HETEX_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hetex" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The parsed config file ({} when there is none); a broken file is one clear error."""
    file = path or config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {file} is not valid TOML: {exc}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or any(not isinstance(p, dict) for p in profiles.values()):
        raise CliError(f"config file {file}: [profiles.NAME] tables expected")
    return data


def selected_profile(name: str | None, data: dict[str, Any]) -> str | None:
    """--profile, else $HETEX_PROFILE, else the file's default_profile."""
    return name or os.environ.get("HETEX_PROFILE") or data.get("default_profile")


def profile_value(name: str | None, key: str) -> str | None:
    """One setting of the selected profile, or None."""
    data = load_config()
    chosen = selected_profile(name, data)
    if chosen is None:
        return None
    profiles = data.get("profiles", {})
    if chosen not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise CliError(f"no profile {chosen!r} in {config_path()} (profiles: {known}); see `hetex config`")
    value = profiles[chosen].get(key)
    if value is None:
        return None
    if key == "key":
        return str(Path(str(value)).expanduser())
    return str(value)


def _toml_value(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def dump_config(data: dict[str, Any]) -> str:
    """TOML text of a config (default_profile and [profiles.NAME] tables of strings)."""
    lines = ["# hetex client configuration (`hetex config --help`)"]
    if data.get("default_profile"):
        lines.append(f"default_profile = {_toml_value(str(data['default_profile']))}")
    for name, profile in sorted(data.get("profiles", {}).items()):
        lines += ["", f"[profiles.{_toml_value(name)}]"]
        lines += [f"{k} = {_toml_value(str(v))}" for k, v in profile.items() if v is not None]
    return "\n".join(lines) + "\n"


def save_config(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the config file (0600; its directory is created)."""
    file = path or config_path()
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(dump_config(data), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(file)
    return file
