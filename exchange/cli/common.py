"""Shared CLI plumbing: usage errors (exit 2), JSON/table output, settings from flags."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from exchange.settings import Settings


class CliError(Exception):
    """A user-facing CLI failure: printed without a traceback; exit code 2 unless given."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_db_flag(parser: argparse.ArgumentParser) -> None:
    """--database-url, defaulting to HETEX_DATABASE_URL or ./hetex.db."""
    parser.add_argument("--database-url", help="database URL (default: $HETEX_DATABASE_URL or ./hetex.db)")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment plus any flags the command defined."""
    overrides = {k: getattr(args, k, None) for k in ("database_url", "host", "port", "key_dir", "authority")}
    overrides.update(extra)
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Human output: a table."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    Console().print(table)
