"""`hetex usage report`: the node side - sign a usage report (DSSE, node key) and send it signed (RFC 9421)."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, with_client
from exchange.cli.common import CliError
from exchange.cli.output import emit_record

if TYPE_CHECKING:
    from exchange.client import HetexClient
    from federation.keys import SigningKey


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `usage` verbs."""
    p = sub.add_parser("usage", help="node-side usage reporting")
    usage_sub = p.add_subparsers(dest="usage_command", required=True)
    rep = usage_sub.add_parser("report", help="report device-minutes used on a contract for one period")
    add_client_flags(rep)
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
    from exchange.services.usage import USAGE_PAYLOAD_TYPE, usage_payload
    from federation.dsse import sign_envelope

    return sign_envelope(USAGE_PAYLOAD_TYPE, usage_payload(**fields), [(keyid, key)])


async def send_usage(client: HetexClient, contract_id: str, envelope: dict[str, Any]) -> Any:
    """POST the envelope as a signed request; the parsed answer."""
    return await client.request("POST", f"/v1/contracts/{contract_id}/usage", envelope)


def run_report(args: argparse.Namespace) -> int:
    """Sign and send one usage report (the node key is the --key); print the exchange's answer."""
    period_start = parse_time(args.period_start, "--from")
    period_end = parse_time(args.period_end, "--to")

    async def go(client: HetexClient) -> Any:
        envelope = build_usage_envelope(
            client.key,
            client.keyid,
            contract_id=args.contract,
            meter_id=args.meter,
            seq=args.seq,
            period_start=period_start,
            period_end=period_end,
            device_minutes=args.device_minutes,
            availability_bps=args.availability_bps,
        )
        return await send_usage(client, args.contract, envelope)

    data = with_client(args, go)
    fields = ["id", "contract_id", "meter_id", "seq", "period_start", "period_end", "device_minutes", "status", "flags"]
    emit_record(args, data, [*fields, "log_index"], title="usage report")
    return 0
