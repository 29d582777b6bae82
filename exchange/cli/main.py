"""Entry point of the `hetex` console script: dispatches to the verb modules."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from exchange.cli import (
    admin,
    audit,
    bench,
    cri,
    db,
    demo,
    keys,
    ledger,
    login,
    match,
    orders,
    participants,
    peers,
    serve,
    settle,
    usage,
)
from exchange.cli.common import CliError
from identifiers.errors import HetexError

COMMAND_MODULES = [
    serve,
    db,
    cri,
    keys,
    participants,
    orders,
    ledger,
    match,
    admin,
    peers,
    bench,
    audit,
    settle,
    usage,
    demo,
    login,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (each module adds its verbs)."""
    parser = argparse.ArgumentParser(prog="hetex", description="hetex: heterogeneous compute exchange")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; domain and usage errors print a message and exit 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code = args.func(args)
    except CliError as exc:
        print(f"hetex: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HetexError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"hetex: error{where}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
