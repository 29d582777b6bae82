"""`hetex bench ...`: measured performance figures; each stage adds its verb to BENCH_REGISTRARS."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from exchange.cli import bench_match

BENCH_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [bench_match.register_match]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` group and its verbs."""
    p = sub.add_parser("bench", help="performance benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    for add in BENCH_REGISTRARS:
        add(bsub)
