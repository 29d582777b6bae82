"""`hetex audit verify|show`: check an audit bundle offline, and read its totals as tables."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from exchange.audit import layout as L
from exchange.audit.verify import VerifyReport, verify_bundle
from exchange.cli.common import CliError, print_json, print_table
from federation.errors import KeyFormatError
from federation.keys import VerifyKey, load_public_key


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `audit` verbs."""
    p = sub.add_parser("audit", help="regulator audit bundles (verify offline, show totals)")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser(
        "verify",
        help="verify a bundle offline: signatures, inclusion proofs, hashes, totals, filters (exit 0 ok, 1 problems)",
    )
    v.add_argument("bundle", help="bundle directory, .tar or .tar.gz")
    v.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEYFILE",
        help="the exchange's public key obtained out of band (base64 or C2SP verifier key); repeatable",
    )
    v.add_argument("--since", metavar="CHECKPOINT", help="an earlier signed checkpoint of the same log")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=run_verify)
    s = audit_sub.add_parser("show", help="print a bundle's totals, flows and domestic share (does not verify)")
    s.add_argument("bundle", help="bundle directory, .tar or .tar.gz")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_show)


def _trusted(paths: list[str]) -> list[VerifyKey]:
    keys = []
    for path in paths:
        try:
            keys.append(load_public_key(Path(path)))
        except (OSError, UnicodeDecodeError, KeyFormatError) as exc:
            raise CliError(f"cannot read trusted key {path}: {exc}") from None
    return keys


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 with a summary when the bundle verifies, 1 naming every problem, 2 on usage errors."""
    bundle = Path(args.bundle)
    if not bundle.exists():
        raise CliError(f"no bundle at {bundle}")
    trusted = _trusted(args.trusted_key)
    since = None
    if args.since:
        try:
            since = Path(args.since).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read checkpoint {args.since}: {exc}") from None
    report = verify_bundle(bundle, trusted_keys=trusted or None, since_checkpoint=since)
    if args.json:
        print_json(report.to_json())
    else:
        _print_report(report)
    return 0 if report.ok else 1


def _print_report(report: VerifyReport) -> None:
    cp = report.checkpoint or {}
    out = sys.stdout
    if report.ok:
        out.write(f"OK: {report.bundle}\n")
    else:
        n = len(report.problems) + report.problems_omitted
        out.write(f"FAILED: {report.bundle}: {n} problem(s)\n")
        for p in report.problems:
            out.write(f"  - {p}\n")
        if report.problems_omitted:
            out.write(f"  ... and {report.problems_omitted} more\n")
    out.write(
        f"records {report.records}, signatures checked {report.signatures_checked}, inclusion proofs checked "
        f"{report.proofs_checked}, {report.seconds:.2f} s ({report.records_per_second:,.0f} records/s)\n"
    )
    out.write(f"checkpoint: {cp.get('origin')} size {cp.get('size')} root {cp.get('root')}\n")
    pin = "pinned with --trusted-key" if report.trusted_key_pinned else "NOT pinned (pass --trusted-key)"
    out.write(f"exchange key: {report.exchange_key_id} ({pin})\n")
    if report.consistency:
        c = report.consistency
        out.write(f"consistency since size {c.get('since_size')}: {c.get('status')}\n")
    settled = (report.totals or {}).get("settled", {})
    out.write(
        f"settled: {settled.get('records', 0)} records, {_yuan(settled.get('fen', 0))} yuan, "
        f"{settled.get('scu_hours', '0')} SCU-hours\n"
    )


# ---------------------------------------------------------------------------------------------------
# show


def read_manifest(bundle: Path) -> dict[str, Any]:
    """manifest.json of a bundle directory or archive (not verified)."""
    try:
        if bundle.is_dir():
            data = (bundle / L.MANIFEST).read_bytes()
        else:
            with tarfile.open(bundle, "r:*") as tar:
                member = next((m for m in tar if m.isfile() and m.name.rsplit("/", 1)[-1] == L.MANIFEST), None)
                if member is None:
                    raise CliError(f"{bundle} holds no manifest.json")
                f = tar.extractfile(member)
                assert f is not None
                data = f.read()
        manifest = json.loads(data)
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise CliError(f"cannot read the manifest of {bundle}: {exc}") from None
    if not isinstance(manifest, dict):
        raise CliError("manifest.json is not a JSON object")
    return manifest


def _yuan(fen: int) -> str:
    return f"{Decimal(fen) / 100:,.2f}"


def _share(part: int, whole: int) -> str:
    return f"{Decimal(part) * 100 / whole:.1f}%" if whole else "-"


def domestic_share(totals: dict[str, Any]) -> dict[str, Any]:
    """Share of settled fen and SCU-hours on domestic accelerators (percent strings)."""
    by = totals.get("by_origin", {})
    all_fen = totals.get("settled", {}).get("fen", 0)
    all_scu = Decimal(totals.get("settled", {}).get("scu_hours", "0"))
    dom = by.get("domestic", {})
    dom_scu = Decimal(dom.get("scu_hours", "0"))
    return {
        "fen": _share(dom.get("fen", 0), all_fen),
        "scu_hours": f"{dom_scu * 100 / all_scu:.1f}%" if all_scu else "-",
    }


def run_show(args: argparse.Namespace) -> int:
    """Summary tables for people (or --json)."""
    bundle = Path(args.bundle)
    if not bundle.exists():
        raise CliError(f"no bundle at {bundle}")
    m = read_manifest(bundle)
    totals = m.get("totals") or {}
    share = domestic_share(totals)
    if args.json:
        print_json(
            {
                "export_id": m.get("export_id"),
                "exchange": m.get("exchange"),
                "filters": m.get("filters"),
                "checkpoint": m.get("checkpoint"),
                "counts": m.get("counts"),
                "totals": totals,
                "domestic_share": share,
                "verified": False,
            }
        )
        return 0
    f = m.get("filters") or {}
    print_table(
        f"Audit export {m.get('export_id')} (not verified here: run `hetex audit verify`)",
        ["field", "value"],
        [
            ("exchange", f"{(m.get('exchange') or {}).get('authority')} {(m.get('exchange') or {}).get('origin')}"),
            ("period", f"{f.get('from')} .. {f.get('to')}"),
            ("region / operator / family", f"{f.get('region')} / {f.get('operator')} / {f.get('model_family')}"),
            ("checkpoint size", (m.get("checkpoint") or {}).get("size")),
            ("records", (m.get("counts") or {}).get("records")),
            ("records by kind", ", ".join(f"{k} {v}" for k, v in totals.get("records_by_kind", {}).items())),
        ],
    )
    s = totals.get("settled", {})
    print_table(
        "Settled",
        ["records", "yuan", "SCU-hours", "domestic share (yuan)", "domestic share (SCU-h)"],
        [(s.get("records"), _yuan(s.get("fen", 0)), s.get("scu_hours"), share["fen"], share["scu_hours"])],
    )
    all_fen = s.get("fen", 0)
    for table, title in (
        ("by_region", "By provider region"),
        ("by_model_family", "By model family"),
        ("by_billing_mode", "By billing mode"),
        ("by_origin", "Domestic vs imported accelerators"),
    ):
        table_rows = [
            (k, c["records"], _yuan(c["fen"]), c["scu_hours"], _share(c["fen"], all_fen))
            for k, c in totals.get(table, {}).items()
        ]
        print_table(title, [table.removeprefix("by_"), "records", "yuan", "SCU-hours", "share"], table_rows)
    flows = totals.get("flows", {})
    providers = sorted({p for row in flows.values() for p in row})
    rows = [[buyer, *(_yuan(row[p]["fen"]) if p in row else "" for p in providers)] for buyer, row in flows.items()]
    print_table(
        "Flows: buyer home region (rows) x provider region (columns), yuan", ["buyer \\ provider", *providers], rows
    )
    return 0
