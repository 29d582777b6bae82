"""`hetex login --web`: sign a request with the participant's key and print a one-time console link;
`--list` shows the participant's console sessions and `--revoke ID` ends one."""

from __future__ import annotations

import argparse
import webbrowser
from typing import Any

from exchange.cli.client_common import add_client_flags, with_client
from exchange.cli.common import CliError, print_json, print_table
from exchange.client import HetexClient


def register(sub: argparse._SubParsersAction) -> None:
    """Add `login`."""
    p = sub.add_parser("login", help="sign in to the web console without giving the page your key")
    add_client_flags(p)
    p.add_argument("--web", action="store_true", help="print a one-time sign-in link (valid 2 minutes)")
    p.add_argument("--open", action="store_true", help="also open the link in the default browser")
    p.add_argument("--list", action="store_true", help="list your console sessions")
    p.add_argument("--revoke", metavar="ID", help="revoke one of your console sessions")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One of --web, --list, --revoke."""
    chosen = [name for name in ("web", "list", "revoke") if getattr(args, name)]
    if len(chosen) != 1:
        raise CliError("choose one of --web, --list or --revoke ID")

    async def call(client: HetexClient) -> Any:
        if args.web:
            return await client.request("POST", "/console/sessions", {})
        if args.list:
            return await client.request("GET", "/console/sessions")
        return await client.request("POST", f"/console/sessions/{args.revoke}/revoke", {})

    data = with_client(args, call)
    if args.json:
        print_json(data)
    elif args.web:
        print(data["link"])
        print(
            f"one-time link for this {data['role']}, valid until epoch {data['link_expires_at']}; open it in a browser"
        )
    elif args.list:
        cols = ["id", "state", "created_at", "expires_at", "user_agent"]
        print_table("console sessions", cols, [[s.get(c) for c in cols] for s in data["sessions"]])
    else:
        print(f"session {data['id']}: {data['state']}")
    if args.web and args.open:
        webbrowser.open(data["link"])
    return 0
