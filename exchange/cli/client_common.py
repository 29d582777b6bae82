"""Shared plumbing of the CLI verbs that talk to an exchange over HTTP: --url/--key flags, the signed
client, running one async call, and turning connection failures into exit-2 messages."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from exchange.cli.common import CliError
from exchange.client import HetexClient
from federation.keys import SigningKey, load_signing_key

DEFAULT_URL = "http://127.0.0.1:8470"
T = TypeVar("T")


def add_client_flags(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """--url, --key and (optionally) --json."""
    parser.add_argument("--url", help=f"exchange base URL (default: $HETEX_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="private key file (PEM) of the participant (default: $HETEX_KEY)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def load_key(path: str | None) -> SigningKey:
    """The participant's signing key from --key or $HETEX_KEY."""
    path = path or os.environ.get("HETEX_KEY")
    if not path:
        raise CliError("no key: pass --key KEYFILE (a PEM private key from `hetex keys new`) or set HETEX_KEY")
    try:
        return load_signing_key(Path(path))
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from None


def with_client(args: argparse.Namespace, call: Callable[[HetexClient], Awaitable[T]]) -> T:
    """Run `call` with a signed client for --url/--key; connection problems become CliError."""
    url = args.url or os.environ.get("HETEX_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url must start with http:// or https://, got {url!r}")
    key = load_key(args.key)

    async def go() -> T:
        async with HetexClient(url, key) as client:
            return await call(client)

    try:
        return asyncio.run(go())
    except aiohttp.ClientError as exc:
        raise CliError(f"cannot reach the exchange at {url}: {exc}") from None
    except TimeoutError:
        raise CliError(f"the exchange at {url} did not answer in time") from None


def split_list(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b'] (None stays None)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """The dict without None values."""
    return {k: v for k, v in data.items() if v is not None}
