"""Entry point of the `hetex` console script: dispatches to the verb modules.

Start-up is lazy: only the module(s) of the command being run are imported; every other command is a
placeholder parser holding its one-line help. Each row of COMMANDS is (command, help, modules); a module's
`register(subparsers)` adds its verbs (a group shared by several modules is made with common.group()).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from exchange.cli.errors import EXIT_CODES_HELP, EXIT_USAGE, CliError, report_failure

COMMANDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("serve", "run the exchange HTTP service", ("serve",)),
    ("db", "database schema", ("db",)),
    ("config", "show or set the client configuration (profiles: url, key, role)", ("config_cmd",)),
    ("cri", "compute resource identifiers", ("cri",)),
    ("keys", "participant key pairs", ("keys",)),
    ("provider", "provider participants", ("participants",)),
    ("buyer", "buyer participants", ("participants",)),
    ("site", "provider sites (data-centre nodes)", ("participants",)),
    ("pool", "accelerator pools at a site", ("participants",)),
    ("offer", "capacity offers", ("participants",)),
    ("order", "buyer orders", ("orders",)),
    ("contract", "contracts: list, show, confirm, cancel", ("contracts",)),
    ("settlement", "settlement records of your contracts", ("contracts",)),
    ("statement", "spend (buyer) or earnings (provider) over a period, with what is accruing now", ("contracts",)),
    ("ledger", "transparency log: checkpoints, proofs, verification", ("ledger",)),
    ("match", "clear a saved market snapshot offline (no database)", ("match",)),
    ("market", "the live market: offers, depth, prices, quote, snapshot", ("match", "market")),
    ("round", "clearing rounds", ("match", "market")),
    ("admin", "operator tasks (keys, regulators, operators, peers)", ("admin", "peers")),
    ("peer", "federation peers of an exchange", ("market",)),
    ("health", "is the exchange up? (GET /healthz; --wait polls until it is)", ("market",)),
    ("bench", "performance benchmarks", ("bench", "bench_startup")),
    ("audit", "regulator audit bundles (export, verify offline, show totals)", ("audit", "audit_export")),
    ("settle", "settlement of contracts", ("settle",)),
    ("usage", "node-side usage reporting", ("usage",)),
    ("agent", "the provider's node agent: devices, heartbeats, metered signed usage", ("agent",)),
    ("demo", "run the whole market story on a temporary database", ("demo",)),
    ("login", "sign in to the web console with your key (a one-time link)", ("login",)),
)
COMMAND_NAMES = frozenset(name for name, _, _ in COMMANDS)


class HetexParser(argparse.ArgumentParser):
    """Usage errors in two lines (what is wrong, where the usage is), exit 2; sub-parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(`{self.prog} --help` shows the usage)\n")


class VersionAction(argparse.Action):
    """--version: looks the installed version up only when asked (importlib.metadata is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("hetex")
        except PackageNotFoundError:
            found = "unknown"
        sys.stdout.write(f"hetex {found}\n")
        parser.exit()


def selected_command(argv: Sequence[str]) -> str | None:
    """The first positional argument (the command), or None."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: full verbs for the selected command (all when argv is None), placeholders else."""
    parser = HetexParser(
        prog="hetex",
        description="hetex: heterogeneous compute exchange",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output and show tracebacks")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else selected_command(argv)
    loaded: set[str] = set()
    for name, _help, modules in COMMANDS:
        if argv is None or name == chosen:
            for module in modules:
                if module not in loaded:
                    loaded.add(module)
                    importlib.import_module(f"exchange.cli.{module}").register(sub)
    for name, help_text, _modules in COMMANDS:
        if name not in sub.choices:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one or two lines on stderr and a documented exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    if not argv:
        parser.print_help()
        return 0
    if len(argv) == 1 and not argv[0].startswith("-"):
        group = sub_parser(parser, argv[0]) if argv[0] in COMMAND_NAMES else None
        if group is not None and any(isinstance(a, argparse._SubParsersAction) for a in group._actions):
            group.print_help(sys.stderr)  # a group without its verb: list the verbs, like git
            return EXIT_USAGE
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # a group without its verb (`hetex contract`): its help, like git
        target = sub_parser(parser, args.command) if args.command else parser
        target.print_help()
        return 0 if args.command else 2
    import logging

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        return report_failure(exc, args, verbose=args.verbose)
    return int(code or 0)


def sub_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of one command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser


__all__ = ["COMMANDS", "CliError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
