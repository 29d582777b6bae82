"""`hetex config [show|set|use|path]`: the client profiles (url, key, role) in ~/.config/hetex/config.toml."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from exchange.cli.common import print_json
from exchange.cli.config import PROFILE_KEYS, ROLES, config_path, load_config, save_config, selected_profile
from exchange.cli.errors import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add `config`."""
    p = sub.add_parser(
        "config",
        help="show or set the client configuration (profiles: url, key, role)",
        description="Client profiles live in $XDG_CONFIG_HOME/hetex/config.toml (default ~/.config/hetex/config.toml; "
        "$HETEX_CONFIG overrides the path). A flag beats a HETEX_* variable, which beats the profile.",
    )
    p.set_defaults(func=run_show, json=False, profile=None)
    csub = p.add_subparsers(dest="config_command", metavar="VERB")
    show = csub.add_parser("show", help="print the profiles and which one is in use (default verb)")
    show.add_argument("--json", action="store_true")
    show.add_argument("--profile", help="the profile to mark as in use")
    show.set_defaults(func=run_show)
    set_ = csub.add_parser("set", help="set url, key or role of a profile (created if new)")
    set_.add_argument("name", choices=PROFILE_KEYS)
    set_.add_argument("value")
    set_.add_argument("--profile", help="profile to change (default: the one in use, else 'default')")
    set_.set_defaults(func=run_set)
    use = csub.add_parser("use", help="make a profile the default")
    use.add_argument("profile_name", metavar="PROFILE")
    use.set_defaults(func=run_use)
    path = csub.add_parser("path", help="print the config file's path")
    path.set_defaults(func=run_path)
    table = csub.add_parser("settings", help="every HETEX_* variable with its default and meaning")
    table.add_argument("--markdown", action="store_true", help="the Markdown table the README holds")
    table.set_defaults(func=run_settings)


def run_show(args: argparse.Namespace) -> int:
    """Print the config."""
    data = load_config()
    active = selected_profile(getattr(args, "profile", None), data)
    overrides = {k: os.environ[f"HETEX_{k.upper()}"] for k in ("url", "key") if os.environ.get(f"HETEX_{k.upper()}")}
    doc = {"path": str(config_path()), "active_profile": active, "env_overrides": overrides, **data}
    if getattr(args, "json", False):
        print_json(doc)
        return 0
    print(f"config file: {config_path()}{'' if config_path().exists() else ' (not created yet)'}")
    for name, profile in sorted(data.get("profiles", {}).items()):
        mark = "*" if name == active else " "
        values = "  ".join(f"{k}={profile.get(k)}" for k in PROFILE_KEYS if profile.get(k) is not None)
        print(f"{mark} {name}: {values}")
    for k, v in overrides.items():
        print(f"  HETEX_{k.upper()}={v} overrides the profile's {k}")
    if not data.get("profiles"):
        print("no profiles yet: `hetex config set url http://127.0.0.1:8470 --profile buyer`")
    return 0


def run_set(args: argparse.Namespace) -> int:
    """Set one value of a profile."""
    data = load_config()
    name = args.profile or selected_profile(None, data) or "default"
    value = args.value
    if args.name == "role" and value not in ROLES:
        raise CliError(f"role must be one of {', '.join(ROLES)}, got {value!r}")
    if args.name == "url" and not value.startswith(("http://", "https://")):
        raise CliError(f"url must start with http:// or https://, got {value!r}")
    if args.name == "key":
        key = Path(value).expanduser()
        if not key.is_file():
            raise CliError(f"key file {value} does not exist (make one with `hetex keys new`)")
        value = str(key.resolve())
    data.setdefault("profiles", {}).setdefault(name, {})[args.name] = value
    data.setdefault("default_profile", name)
    path = save_config(data)
    print(f"{path}: [{name}] {args.name} = {value}")
    return 0


def run_use(args: argparse.Namespace) -> int:
    """Switch the default profile."""
    data = load_config()
    if args.profile_name not in data.get("profiles", {}):
        raise CliError(f"no profile {args.profile_name!r} in {config_path()}")
    data["default_profile"] = args.profile_name
    save_config(data)
    print(f"default profile: {args.profile_name}")
    return 0


def run_settings(args: argparse.Namespace) -> int:
    """Print the generated settings table."""
    from exchange.cli.settings_doc import markdown_table, text_table

    print(markdown_table() if args.markdown else text_table(), end="" if args.markdown else "\n")
    return 0


def run_path(args: argparse.Namespace) -> int:
    """Print the path."""
    print(config_path())
    return 0
