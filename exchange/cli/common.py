"""Shared CLI plumbing: usage errors (exit 2), JSON/table output, settings from flags, shared verb groups.

Imports of rich, pydantic and the service stay inside functions: `hetex --help` must start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from exchange.cli.errors import CliError

if TYPE_CHECKING:
    from exchange.settings import Settings

__all__ = ["CliError", "add_db_flag", "group", "print_json", "print_table", "settings_from"]

_GROUPS = "_hetex_groups"


def group(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """The subparsers of command `name`, created on first use (or found on a parser another module made)
    so several modules can add verbs to one group."""
    groups: dict[str, argparse._SubParsersAction] = getattr(sub, _GROUPS, None) or {}
    setattr(sub, _GROUPS, groups)
    if name not in groups:
        existing = sub.choices.get(name)
        if existing is not None:
            found = [a for a in existing._actions if isinstance(a, argparse._SubParsersAction)]
            if not found:
                raise RuntimeError(f"command {name!r} has no verbs to add to")
            groups[name] = found[0]
        else:
            p = sub.add_parser(name, help=help_text)
            groups[name] = p.add_subparsers(dest=f"{name}_command", required=True, metavar="VERB")
    return groups[name]


def add_db_flag(parser: argparse.ArgumentParser) -> None:
    """--database-url, defaulting to HETEX_DATABASE_URL or ./hetex.db."""
    parser.add_argument("--database-url", help="database URL (default: $HETEX_DATABASE_URL or ./hetex.db)")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment plus any flags the command defined; a bad value names its flag."""
    from pydantic import ValidationError as PydanticError

    from exchange.settings import Settings
    from identifiers.errors import ValidationError

    flags = ("database_url", "host", "port", "key_dir", "authority")
    overrides = {k: getattr(args, k, None) for k in flags}
    overrides.update(extra)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.from_env(**given)
    except ValidationError as exc:
        name = (exc.field or "").removeprefix("HETEX_").lower()
        if name in given and name in flags:
            raise CliError(f"--{name.replace('_', '-')}: {exc.message}") from None
        raise
    except PydanticError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            source = f"--{name.replace('_', '-')}" if name in given else f"HETEX_{name.upper()}"
            problems.append(f"{source}: {err['msg']}")
        raise CliError("; ".join(problems)) from None


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Human output: a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)
