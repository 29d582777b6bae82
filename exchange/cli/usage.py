"""`hetex usage report`: the node side - sign a usage report (DSSE, node key) and send it signed (RFC 9421)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from exchange.cli.common import CliError, print_json
from exchange.client import HetexClient
from exchange.services.usage import USAGE_PAYLOAD_TYPE, usage_payload
from federation.dsse import sign_envelope
from federation.keys import SigningKey, load_signing_key


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `usage` verbs."""
    p = sub.add_parser("usage", help="node-side usage reporting")
    usage_sub = p.add_subparsers(dest="usage_command", required=True)
    rep = usage_sub.add_parser("report", help="report device-minutes used on a contract for one period")
    rep.add_argument("--url", required=True, help="exchange base URL, e.g. http://127.0.0.1:8470")
    rep.add_argument("--key", required=True, type=Path, help="the provider's private key file (PEM)")
    rep.add_argument("--contract", required=True, help="contract id")
    rep.add_argument("--meter", required=True, help="meter id (one per node or exporter)")
    rep.add_argument("--seq", required=True, type=int, help="this meter's sequence number (1, 2, ...)")
    rep.add_argument("--from", dest="period_start", required=True, help="period start: epoch seconds or ISO 8601")
    rep.add_argument("--to", dest="period_end", required=True, help="period end (exclusive)")
    rep.add_argument("--device-minutes", required=True, type=int, help="devices x minutes used in the period")
    rep.add_argument("--availability-bps", type=int, default=10_000, help="availability, basis points (10000)")
    rep.set_defaults(func=run_report)


def parse_time(text: str, flag: str) -> int:
    """Epoch seconds from an integer or an ISO 8601 time with an offset."""
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag}: not epoch seconds or an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        raise CliError(f"{flag}: give a UTC offset (e.g. 2026-01-01T00:00:00+08:00)")
    return int(dt.timestamp())


def build_usage_envelope(key: SigningKey, keyid: str, **fields: Any) -> dict[str, Any]:
    """The DSSE envelope over the RFC 8785 bytes of the usage payload, signed by the node key."""
    return sign_envelope(USAGE_PAYLOAD_TYPE, usage_payload(**fields), [(keyid, key)])


async def send_usage(client: HetexClient, contract_id: str, envelope: dict[str, Any]) -> Any:
    """POST the envelope as a signed request; the parsed answer."""
    return await client.request("POST", f"/v1/contracts/{contract_id}/usage", envelope)


def run_report(args: argparse.Namespace) -> int:
    """Sign and send one usage report; print the exchange's answer."""
    try:
        key = load_signing_key(args.key)
    except (OSError, ValueError) as exc:
        raise CliError(f"--key: cannot read a private key from {args.key}: {exc}") from None

    async def go() -> Any:
        async with HetexClient(args.url, key) as client:
            envelope = build_usage_envelope(
                key,
                client.keyid,
                contract_id=args.contract,
                meter_id=args.meter,
                seq=args.seq,
                period_start=parse_time(args.period_start, "--from"),
                period_end=parse_time(args.period_end, "--to"),
                device_minutes=args.device_minutes,
                availability_bps=args.availability_bps,
            )
            return await send_usage(client, args.contract, envelope)

    print_json(asyncio.run(go()))
    return 0
