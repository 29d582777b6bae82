"""`hetex cri check`: parse a compute resource identifier and show its parts."""

from __future__ import annotations

import argparse

from exchange.cli.common import print_json, print_table
from identifiers.catalogue import load_catalogue
from identifiers.cri import parse_cri


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `cri` verbs."""
    p = sub.add_parser("cri", help="compute resource identifiers")
    cri_sub = p.add_subparsers(dest="cri_command", required=True)
    check = cri_sub.add_parser("check", help="validate a CRI and print its parts (exit 2 if invalid)")
    check.add_argument("cri")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print the parsed parts, or raise (exit 2) with the reason."""
    cri = parse_cri(args.cri, catalogue=load_catalogue())
    parts = {
        "canonical": str(cri),
        "kind": cri.kind,
        "authority": cri.authority,
        "region": cri.region,
        "operator": cri.operator,
        "site": cri.site,
        "pool": cri.pool,
        "model": cri.model,
        "check": cri.check,
    }
    if args.json:
        print_json(parts)
    else:
        print_table("CRI", ["part", "value"], [(k, v) for k, v in parts.items() if v is not None])
    return 0
