"""Listing and record output for people (a table that fits the terminal, short ids, local times) and for
programs (`-o json|yaml|csv`: full ids, RFC 3339 times)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exchange.cli.errors import CliError
from exchange.cli.times import human_time, rfc3339, zone_note

FORMATS = ("table", "json", "yaml", "csv", "id")
TIME_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "confirmed_at",
        "cancelled_at",
        "start_at",
        "end_at",
        "window_start",
        "window_end",
        "period_start",
        "period_end",
        "as_of",
        "started_at",
        "finished_at",
        "completed_at",
        "last_heartbeat_at",
        "live_until",
        "tombstoned_at",
        "requested_at",
        "expires_at",
        "from",
        "to",
        "period_from",
        "period_to",
    }
)
MIN_ID = 8


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """-o/--output, --json (same as -o json) and --utc."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=None,
        help="output format (default table; id: only the ids, for scripts)",
    )
    parser.add_argument("--json", action="store_true", help="same as -o json")
    parser.add_argument("--utc", action="store_true", help="show times in UTC instead of the local zone")


def add_paging_flags(parser: argparse.ArgumentParser, default_limit: int = 50) -> None:
    """--limit, --cursor, --all."""
    parser.add_argument("--limit", type=int, default=default_limit, help=f"rows per page (default {default_limit})")
    parser.add_argument("--cursor", help="continue from a previous page's cursor")
    parser.add_argument("--all", action="store_true", help="follow cursors to the end")


def output_format(args: argparse.Namespace) -> str:
    """The chosen format."""
    if getattr(args, "json", False):
        return "json"
    return getattr(args, "output", None) or "table"


def machine_times(data: Any) -> Any:
    """`data` with epoch-second time fields as RFC 3339 strings (JSON/YAML/CSV output)."""
    if isinstance(data, Mapping):
        return {
            k: rfc3339(v)
            if k in TIME_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)
            else machine_times(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [machine_times(v) for v in data]
    return data


def _machine_value(key: str, value: Any) -> Any:
    if key in TIME_FIELDS and isinstance(value, int | float) and not isinstance(value, bool):
        return rfc3339(value)
    return machine_times(value)


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id shortened to its shortest prefix (at least 8 characters) that is unique among `ids`."""
    unique = sorted(set(ids))
    result = {}
    for i, full in enumerate(unique):
        need = MIN_ID
        for other in (unique[i - 1] if i else "", unique[i + 1] if i + 1 < len(unique) else ""):
            common = 0
            while common < min(len(full), len(other)) and full[common] == other[common]:
                common += 1
            need = max(need, common + 1)
        result[full] = full if need >= len(full) else full[:need]
    return result


def resolve_prefix(prefix: str, candidates: Sequence[str], what: str) -> str:
    """The one candidate starting with `prefix` (like git); a missing or ambiguous prefix is a CliError."""
    if prefix in candidates:
        return prefix
    matches = sorted({c for c in candidates if c.startswith(prefix)})
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no {what} starts with {prefix!r} (see `hetex {what} list`)")
    shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
    raise CliError(f"{what} id {prefix!r} is ambiguous: {shown}; type more characters")


class Column:
    """One table column: its header, how to get the value from a row, and whether it is an id, a time, or
    never wrapped (e.g. a CRI: never abbreviated, it ends in a check character). A plain class: dataclasses
    would import inspect at start-up."""

    __slots__ = ("get", "header", "is_id", "is_time", "no_wrap")

    def __init__(
        self,
        header: str,
        get: str | Callable[[Mapping[str, Any]], Any],
        is_id: bool = False,
        is_time: bool = False,
        no_wrap: bool = False,
    ) -> None:
        self.header, self.get, self.is_id, self.is_time, self.no_wrap = header, get, is_id, is_time, no_wrap

    def value(self, row: Mapping[str, Any]) -> Any:
        """The raw value of this column in `row`."""
        return row.get(self.get) if isinstance(self.get, str) else self.get(row)


def emit_rows(
    args: argparse.Namespace,
    document: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    footer: str | None = None,
) -> None:
    """Print a listing: `document` whole for json/yaml, `rows` as CSV or a table."""
    fmt = output_format(args)
    if fmt == "id":
        id_col = next((c for c in columns if c.is_id), None)
        for row in rows:
            value = id_col.value(row) if id_col else (row.get("id") or row.get("cri"))
            sys.stdout.write(f"{value}\n")
        return
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(machine_times(document), indent=2, default=str, ensure_ascii=False) + "\n")
        return
    if fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(machine_times(document), sort_keys=False, allow_unicode=True))
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow([c.header for c in columns])
        for row in rows:
            values = [c.value(row) for c in columns]
            writer.writerow(
                [
                    rfc3339(v) if c.is_time and isinstance(v, int | float) else _cell(v)
                    for c, v in zip(columns, values, strict=True)
                ]
            )
        return
    _print_table(args, rows, columns, title, footer)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        import json

        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _print_table(
    args: argparse.Namespace,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    title: str | None,
    footer: str | None,
) -> None:
    from rich import box
    from rich.table import Table

    utc = bool(getattr(args, "utc", False))
    if rows:  # a column empty in every row only takes width
        columns = [c for c in columns if any(c.value(r) not in (None, "", []) for r in rows)]
    shorts: dict[int, dict[str, str]] = {}
    for i, col in enumerate(columns):
        if col.is_id:
            shorts[i] = short_ids([str(v) for v in (col.value(r) for r in rows) if v])
    has_time = any(c.is_time for c in columns)
    table = Table(
        title=title,
        caption=zone_note(utc) if has_time and rows else None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title_justify="left",
        caption_justify="left",
        collapse_padding=True,
        padding=(0, 1, 0, 0),
    )
    for col in columns:
        fixed = col.is_id or col.no_wrap
        table.add_column(
            col.header, no_wrap=fixed, overflow="fold" if fixed else "ellipsis", min_width=min(len(col.header), 6)
        )
    for row in rows:
        cells = []
        for i, col in enumerate(columns):
            value = col.value(row)
            if i in shorts and value:
                cells.append(shorts[i][str(value)])
            elif col.is_time and isinstance(value, int | float) and value:
                cells.append(human_time(value, utc=utc, short=True))
            else:
                cells.append(_cell(value))
        table.add_row(*cells)
    console = console_for_stdout()
    console.print(table)
    if not rows:
        console.print("(none)")
    if footer:
        console.print(footer)


def console_for_stdout() -> Any:
    """A rich console: the terminal's width on a terminal; wide (no wrapping) into a pipe or file."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=max(200, int(os.environ.get("COLUMNS", "0") or 0)))


def emit_record(args: argparse.Namespace, data: Mapping[str, Any], fields: Sequence[str], *, title: str) -> None:
    """Print one record: json/yaml whole, or a field/value table (times human, ids full)."""
    fmt = output_format(args)
    if fmt == "id":
        sys.stdout.write(f"{data.get('cri') or data.get('id')}\n")  # sites and pools are named by CRI
        return
    if fmt in ("json", "yaml", "csv"):
        if fmt == "csv":
            fmt = "json"
        emit_rows(argparse.Namespace(output=fmt, json=False), data, [], [])
        return
    utc = bool(getattr(args, "utc", False))
    rows = []
    for f in fields:
        value = data.get(f)
        if f in TIME_FIELDS and isinstance(value, int | float) and value:
            rows.append({"field": f, "value": human_time(value, utc=utc)})
        else:
            rows.append({"field": f, "value": _cell(value)})
    emit_rows(args, data, rows, [Column("field", "field"), Column("value", "value")], title=title)
