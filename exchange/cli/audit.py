"""`hetex audit verify|show`: check an audit bundle offline, and read its totals as tables."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from exchange.audit.limits import DEFAULT_LIMITS, Limits
from exchange.audit.verify import VerifyReport, verify_bundle
from exchange.cli.common import CliError, print_json, print_table
from federation.errors import KeyFormatError
from federation.keys import VerifyKey, load_public_key


def _limit_flags(p: argparse.ArgumentParser) -> None:
    for name in Limits.names():
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            metavar="N",
            default=getattr(DEFAULT_LIMITS, name),
            help=f"refuse the bundle past this limit (default {getattr(DEFAULT_LIMITS, name)})",
        )


def _limits(args: argparse.Namespace) -> Limits:
    values = {name: getattr(args, name, getattr(DEFAULT_LIMITS, name)) for name in Limits.names()}
    for name, value in values.items():
        if value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be a positive integer")
    return Limits(**values)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `audit` verbs."""
    p = sub.add_parser("audit", help="regulator audit bundles (verify offline, show totals)")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    v = audit_sub.add_parser(
        "verify",
        help="verify a bundle offline (exit 0 verified and trusted, 1 problems, 3 UNTRUSTED: no --trusted-key "
        "anchors it, 2 usage)",
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
    _limit_flags(v)
    v.set_defaults(func=run_verify)
    s = audit_sub.add_parser(
        "show", help="verify a bundle, then print its totals, flows and domestic share (nothing when it fails)"
    )
    s.add_argument("bundle", help="bundle directory, .tar or .tar.gz")
    s.add_argument("--trusted-key", action="append", default=[], metavar="KEYFILE", help="as for verify")
    s.add_argument("--json", action="store_true")
    _limit_flags(s)
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
    report = verify_bundle(bundle, trusted_keys=trusted or None, since_checkpoint=since, limits=_limits(args))
    if args.json:
        print_json(report.to_json())
    else:
        _print_report(report)
    return report.exit_code


def _print_report(report: VerifyReport) -> None:
    cp = report.checkpoint or {}
    out = sys.stdout
    if report.trusted:
        out.write(f"OK: {report.bundle}: verified, anchored to the key given with --trusted-key\n")
    elif report.ok:
        out.write(
            f"UNTRUSTED: {report.bundle}: internally consistent, but not anchored to a trusted key "
            "(pass --trusted-key with the exchange key obtained out of band)\n"
        )
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
    if not report.trusted_key_pinned:
        pin = "NOT pinned: pass --trusted-key"
    elif report.anchored:
        pin = "matches --trusted-key"
    else:
        pin = "does NOT match --trusted-key" if "manifest_untrusted_key" in report.codes() else "not verified"
    out.write(f"bundle's exchange key: {report.exchange_key_id} ({pin})\n")
    if report.consistency:
        c = report.consistency
        out.write(f"consistency since size {c.get('since_size')}: {c.get('status')}\n")
    if not report.ok:
        return  # no figure from a bundle that does not verify
    settled = (report.totals or {}).get("settled", {})
    out.write(
        f"settled: {settled.get('records', 0)} records, {_yuan(settled.get('fen', 0))} yuan, "
        f"{settled.get('scu_hours', '0')} SCU-hours\n"
    )


# ---------------------------------------------------------------------------------------------------
# show


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
    """Verify first; print the tables only from a bundle that verifies (exit codes as for verify)."""
    bundle = Path(args.bundle)
    if not bundle.exists():
        raise CliError(f"no bundle at {bundle}")
    trusted = _trusted(getattr(args, "trusted_key", None) or [])
    report = verify_bundle(bundle, trusted_keys=trusted or None, limits=_limits(args))
    if not report.ok or report.manifest is None:
        if args.json:
            print_json({"status": report.status, "verified": False, "problems": [p.to_json() for p in report.problems]})
        else:
            sys.stdout.write(f"NOT SHOWN: {bundle} does not verify; nothing in it can be relied on\n")
            for p in report.problems[:20]:
                sys.stdout.write(f"  - {p}\n")
            if len(report.problems) > 20:
                sys.stdout.write(f"  ... run `hetex audit verify {bundle}` for all {len(report.problems)} problems\n")
        return report.exit_code
    m = report.manifest
    totals = report.totals or {}
    share = domestic_share(totals)
    if args.json:
        print_json(
            {
                "status": report.status,
                "export_id": m["export_id"],
                "exchange": m["exchange"],
                "filters": m["filters"],
                "checkpoint": m["checkpoint"],
                "counts": m["counts"],
                "totals": totals,
                "domestic_share": share,
                "verified": True,
                "trusted": report.trusted,
            }
        )
        return report.exit_code
    if not report.trusted:
        sys.stdout.write(
            "UNTRUSTED: the bundle is internally consistent but not anchored to a trusted exchange key; "
            "pass --trusted-key to rely on these figures\n"
        )
    f = m.get("filters") or {}
    print_table(
        f"Audit export {m.get('export_id')} ({'verified' if report.trusted else 'consistent, UNTRUSTED'})",
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
    return report.exit_code
