"""`hetex audit export`: a regulator's whole export in one command - request it, watch its progress (a rich
progress bar on stderr), download the bundle, check its SHA-256 and verify it offline with --trusted-key."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.cli.client_common import add_client_flags, drop_none, with_client
from exchange.cli.common import group
from exchange.cli.errors import EXIT_FAILURE, CliError
from exchange.cli.times import TIME_HELP, time_arg

if TYPE_CHECKING:
    from exchange.client import HetexClient

POLL_SECONDS = 0.25


def register(sub: argparse._SubParsersAction) -> None:
    """Add `audit export` to the `audit` group."""
    asub = group(sub, "audit", "regulator audit bundles (export, verify offline, show totals)")
    p = asub.add_parser(
        "export",
        help="request an export, show its progress, download the bundle and verify it (regulator key)",
    )
    add_client_flags(p)
    p.add_argument("--from", dest="period_from", required=True, type=time_arg, help=f"period start ({TIME_HELP})")
    p.add_argument("--to", dest="period_to", type=time_arg, help="period end, exclusive (default now)")
    p.add_argument("--region", help="only records of this region")
    p.add_argument("--operator", help="only records of this provider operator code")
    p.add_argument("--model-family", help="only records of this architecture family")
    p.add_argument("--out", required=True, help="where to write the bundle (.tar.gz)")
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEYFILE",
        help="the exchange's public key obtained out of band; verify the bundle against it (repeatable)",
    )
    p.add_argument("--no-verify", action="store_true", help="download only")
    p.add_argument("--timeout", type=float, default=600, help="give up waiting after this many seconds (600)")
    p.set_defaults(func=run_export)


class Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]export[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("queued", total=None)

    def update(self, status: dict[str, Any]) -> None:
        """Show one status answer."""
        if self.bar is None:
            return
        prog = status["progress"]
        self.bar.update(
            self.task, description=status["status"], completed=prog["records_done"], total=prog["records_total"]
        )

    def stop(self) -> None:
        """Leave the bar on screen."""
        if self.bar is not None:
            self.bar.stop()


async def export(client: HetexClient, args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    """Request, poll with progress, download; the final status."""
    started = await client.request("POST", "/v1/audit/exports", body)
    export_id = started["id"]
    progress = Progress(sys.stderr.isatty())
    deadline = time.monotonic() + args.timeout
    status = started
    try:
        while status["status"] not in ("done", "failed"):
            progress.update(status)
            if time.monotonic() > deadline:
                raise CliError(f"export {export_id} still {status['status']} after {args.timeout:g} s", EXIT_FAILURE)
            import asyncio

            await asyncio.sleep(POLL_SECONDS)
            status = await client.request("GET", f"/v1/audit/exports/{export_id}")
        progress.update(status)
    finally:
        progress.stop()
    if status["status"] == "failed":
        raise CliError(f"export {export_id} failed on the exchange: {status.get('error')}", EXIT_FAILURE)
    data = await client.download(status["bundle"]["href"])
    status["downloaded"] = data
    return dict(status)


def run_export(args: argparse.Namespace) -> int:
    """The whole export; exit 0 when downloaded (and verified), 1 when verification finds problems."""
    end = args.period_to if args.period_to is not None else int(time.time())
    if end <= args.period_from:
        raise CliError("--to must be after --from")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CliError(f"--out: directory {out.parent} does not exist")
    trusted = _trusted(args.trusted_key)
    body = drop_none(
        {
            "from": args.period_from,
            "to": end,
            "region": args.region,
            "operator": args.operator,
            "model_family": args.model_family,
        }
    )
    status = with_client(args, lambda c: export(c, args, body))
    data: bytes = status.pop("downloaded")
    digest = hashlib.sha256(data).hexdigest()
    expected = status["bundle"]["sha256"]
    if expected and digest != expected:
        raise CliError(f"downloaded bundle has SHA-256 {digest}, the exchange announced {expected}", EXIT_FAILURE)
    out.write_bytes(data)
    done = status["progress"]
    print(f"export {status['id']}: {done['records_exported']} records, {len(data):,} bytes -> {out}")
    print(f"sha256 {digest}")
    if args.no_verify:
        return 0
    return _verify(out, trusted)


def _trusted(paths: list[str]) -> list[Any]:
    from federation.errors import KeyFormatError
    from federation.keys import load_public_key

    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(Path(path)))
        except (OSError, UnicodeDecodeError, KeyFormatError, ValueError) as exc:
            raise CliError(f"--trusted-key {path}: not a readable public key ({exc})") from None
    return keys


def _verify(bundle: Path, trusted: list[Any]) -> int:
    from exchange.audit.verify import verify_bundle

    report = verify_bundle(bundle, trusted_keys=trusted or None)
    if report.ok:
        pin = "signed by a --trusted-key" if report.trusted_key_pinned else "NOT pinned: pass --trusted-key"
        print(f"verified: {report.records} records, {report.proofs_checked} inclusion proofs; exchange key {pin}")
        return 0
    print(f"verification FAILED: {len(report.problems) + report.problems_omitted} problem(s)")
    for problem in report.problems:
        print(f"  - {problem}")
    return EXIT_FAILURE
