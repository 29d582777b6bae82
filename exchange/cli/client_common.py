"""Shared plumbing of the CLI verbs that talk to an exchange over HTTP: --url/--key/--profile flags, the
signed client, running one async call, and turning connection failures into one-line messages.

aiohttp, cryptography and the client are imported when a request is made, not when the verb is parsed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from exchange.cli.errors import EXIT_UNAVAILABLE, CliError

if TYPE_CHECKING:
    from exchange.client import HetexClient
    from federation.keys import SigningKey

DEFAULT_URL = "http://127.0.0.1:8470"
T = TypeVar("T")


def add_client_flags(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """--url, --key, --profile and (optionally) the output flags -o/--json/--utc."""
    parser.add_argument("--url", help=f"exchange base URL (default: $HETEX_URL, the profile's url, or {DEFAULT_URL})")
    parser.add_argument("--key", help="participant's private key file (PEM) (default: $HETEX_KEY or the profile's)")
    parser.add_argument("--profile", help="config profile (default: $HETEX_PROFILE or the config's default)")
    if json_flag:
        from exchange.cli.output import add_output_flags

        add_output_flags(parser)


def client_setting(args: argparse.Namespace, name: str) -> str | None:
    """--NAME, else $HETEX_NAME, else the selected profile's NAME."""
    value = getattr(args, name, None)
    if value:
        return str(value)
    env = os.environ.get(f"HETEX_{name.upper()}")
    if env:
        return env
    from exchange.cli.config import profile_value

    return profile_value(getattr(args, "profile", None), name)


def load_key(path: str | None) -> SigningKey:
    """The participant's signing key; a missing, unreadable or public key file is named in the message."""
    from pathlib import Path

    from federation.keys import SigningKey

    if not path:
        raise CliError(
            "no key: pass --key KEYFILE (a PEM private key from `hetex keys new`), set HETEX_KEY, "
            "or `hetex config set key KEYFILE`"
        )
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    try:
        return SigningKey.from_pem(data)
    except Exception:
        text = data.strip()
        if text.startswith(b"-----BEGIN PUBLIC KEY") or (len(text) == 44 and text.endswith(b"=")):
            raise CliError(f"{path} is a public key: --key needs the private key file (the .pem next to it)") from None
        raise CliError(f"{path} is not a PEM Ed25519 private key (make one with `hetex keys new`)") from None


def client_url(args: argparse.Namespace) -> str:
    """The exchange base URL for this command."""
    url = client_setting(args, "url") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url must start with http:// or https://, got {url!r}")
    return url


def with_client(args: argparse.Namespace, call: Callable[[HetexClient], Awaitable[T]]) -> T:
    """Run `call` with a signed client for --url/--key; connection problems become CliError (exit 4)."""
    import asyncio

    url = client_url(args)
    key = load_key(client_setting(args, "key"))

    import http.client

    from exchange.client import HetexClient

    async def go() -> T:
        async with HetexClient(url, key, transport="stdlib") as client:
            return await call(client)

    try:
        return asyncio.run(go())
    except TimeoutError:
        raise CliError(f"the exchange at {url} did not answer in time", EXIT_UNAVAILABLE) from None
    except (OSError, http.client.HTTPException) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise CliError(f"cannot reach the exchange at {url}: {why}", EXIT_UNAVAILABLE) from None


def split_list(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b'] (None stays None)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """The dict without None values."""
    return {k: v for k, v in data.items() if v is not None}
