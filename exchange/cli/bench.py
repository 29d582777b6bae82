"""`hetex bench ...`: benchmark verbs. Each module in BENCH_MODULES adds its own subcommand with
`register_bench(bench_subparsers)`; add yours to the list (e.g. `bench match`, `bench ledger`)."""

from __future__ import annotations

import argparse
from types import ModuleType

from exchange.cli import bench_api

#: Benchmark CLI modules, each with `register_bench(bench_subparsers)`.
BENCH_MODULES: list[ModuleType] = [bench_api]


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench` and every benchmark subcommand."""
    p = sub.add_parser("bench", help="benchmarks (figures from one run; --json for machines)")
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for module in BENCH_MODULES:
        module.register_bench(bench_sub)


def positive_float(value: str) -> float:
    """argparse type: a number > 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number
