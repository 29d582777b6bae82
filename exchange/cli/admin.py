"""The `hetex admin` group: operator verbs (several modules add theirs to the one group)."""

from __future__ import annotations

import argparse

ADMIN_PARSERS = "_hetex_admin_subparsers"


def admin_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of `hetex admin`, created on first use so every module can add verbs to it."""
    existing = getattr(sub, ADMIN_PARSERS, None)
    if existing is not None:
        return existing
    parser = sub.add_parser("admin", help="exchange operator commands (peers, keys)")
    admin_sub = parser.add_subparsers(dest="admin_command", required=True, metavar="VERB")
    setattr(sub, ADMIN_PARSERS, admin_sub)
    return admin_sub
