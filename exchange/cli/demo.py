"""`hetex demo`: run the whole market against a real server on a temporary database and show what happened."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.table import Table

from exchange.cli.audit import run_show
from exchange.cli.common import CliError, print_json
from exchange.demo import BALANCE_MODES, Demo, Reporter, StepFailed, yuan

QUIET_LOGGERS = ("hetex", "aiohttp", "alembic", "sqlalchemy")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    p = sub.add_parser(
        "demo",
        help="run a whole market (providers, buyers, rounds, usage, settlement, audit) on a temporary database",
    )
    p.add_argument("--keep", metavar="DIR", help="keep the database, keys and audit bundle in DIR (new or empty)")
    p.add_argument("--json", action="store_true", help="print a machine summary instead of tables")
    p.add_argument("--port", type=int, default=0, help="port for the exchange on 127.0.0.1 (default 0: a free one)")
    p.set_defaults(func=run)


class RichReporter(Reporter):
    """One status line per step: a spinner while it runs, then a tick (or a cross) with its detail."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None
        self.n = 0

    def started(self, name: str) -> None:
        self.n += 1
        self.status = self.console.status(f"[{self.n:2d}] {name} ...")
        self.status.start()

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def finished(self, name: str, detail: str, seconds: float) -> None:
        self._stop()
        self.console.print(
            f"[green]✓[/] [{self.n:2d}] [bold]{name}[/] [dim]({seconds:.2f} s)[/]\n       {detail}", highlight=False
        )

    def failed(self, name: str, reason: str, seconds: float) -> None:
        self._stop()
        self.console.print(f"[red]✗[/] [{self.n:2d}] [bold]{name}[/] failed: {reason}", highlight=False)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 only when every step succeeded, else 1 naming the failed step."""
    if not getattr(args, "verbose", False):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    console = Console(stderr=args.json, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=args.json, highlight=False, width=120)
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            raise CliError(f"--keep {keep}: the directory is not empty")
        keep.mkdir(parents=True, exist_ok=True)
        workdir = keep
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hetex-demo-"))
    demo = Demo(workdir, port=args.port, reporter=RichReporter(console))
    try:
        try:
            summary = asyncio.run(demo.run())
        except StepFailed as exc:
            if args.json:
                print_json(
                    {
                        "ok": False,
                        "failed_step": exc.step,
                        "error": exc.reason,
                        "steps": [s.to_json() for s in demo.steps],
                    }
                )
            else:
                console.print(f"[red]hetex demo failed at step '{exc.step}'[/]: {exc.reason}")
            return 1
        if keep is not None:
            summary["kept_keys"] = save_keys(demo, keep)
        if args.json:
            print_json(summary)
        else:
            print_tables(console, demo, summary, kept=keep)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def save_keys(demo: Demo, keep: Path) -> dict[str, str]:
    """With --keep: every participant's key pair under keys/participants/ and the exchange's public key as
    keys/exchange.pub (for `hetex audit verify --trusted-key`); name -> private key file."""
    import re

    from federation.keys import save_public_key, save_signing_key

    folder = keep / "keys" / "participants"
    folder.mkdir(parents=True, exist_ok=True)
    parties = [*demo.providers, *demo.buyers.values(), demo.operator, demo.regulator]
    saved: dict[str, str] = {}
    for party in parties:
        if party is None:
            continue
        stem = re.sub(r"[^a-z0-9]+", "-", f"{party.role}-{party.name}".lower()).strip("-")
        save_signing_key(folder / f"{stem}.pem", party.client.key)
        save_public_key(folder / f"{stem}.pub", party.client.key.public)
        saved[party.name] = str(folder / f"{stem}.pem")
    from federation.keys import load_signing_key

    # the exchange's key directory holds `<key id>.pem` (one key: the demo never rotates)
    [exchange_pem] = [p for p in (keep / "keys").glob("*.pem") if re.fullmatch(r"[0-9a-f]{8}", p.stem)]
    save_public_key(keep / "keys" / "exchange.pub", load_signing_key(exchange_pem).public)
    return saved


def _table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold")
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left")
    return t


def _hours(seconds: int) -> str:
    return f"{seconds // 86_400} d" if seconds >= 4 * 86_400 else f"{seconds // 3600} h"


def print_tables(console: Console, demo: Demo, s: dict[str, Any], kept: Path | None = None) -> None:
    """What happened, as tables."""
    console.print()
    pools = _table(
        "Registered pools", ["region", "provider", "site", "model", "devices", "ask yuan/h"], ("devices", "ask yuan/h")
    )
    for p in sorted(s["pools"], key=lambda p: (p["region"], p["model"])):
        model = p["model"] + (" (domestic)" if p["domestic"] else "")
        pools.add_row(p["region"], p["provider"], p["site"], model, str(p["devices"]), yuan(p["ask_fen"]))
    console.print(pools)

    by_id = {c["id"]: c for c in s["contracts"]}
    orders = _table("Orders and fills", ["buyer", "order", "billing", "status", "filled", "contracts"], ("filled",))
    for o in s["orders"]:
        parts = [f"{by_id[c]['devices']} x {by_id[c]['model']} @ {by_id[c]['region']}" for c in o["contracts"]]
        status = o["status"] + (f"\n({', '.join(o['flags'])})" if o["flags"] and not o["contracts"] else "")
        orders.add_row(
            o["buyer"], o["label"], o["billing_mode"], status, str(o["filled_devices"]), "\n".join(parts) or "-"
        )
    console.print(orders)

    rounds = _table(
        "Clearing rounds (welfare over the whole lease terms)",
        ["round", "orders", "offers", "contracts", "devices", "welfare yuan", "LP bound yuan", "gap", "audit"],
        ("orders", "offers", "contracts", "devices", "welfare yuan", "LP bound yuan", "gap"),
    )
    for r in s["rounds"]:
        a = r["audit"] or {}
        ir = a.get("ir_buyer_violations", 0) + a.get("ir_provider_violations", 0)
        balanced = "balanced" if a.get("budget_balanced") else "NOT balanced"
        verdict = f"IR {'ok' if ir == 0 else ir}, {balanced}, envy {a.get('envy_violations', 0)}"
        rounds.add_row(
            str(r["number"]),
            str(r["orders"]),
            str(r["offers"]),
            str(r["contracts"]),
            str(r["matched_devices"]),
            yuan(r["welfare_fen"]),
            yuan(r["lp_bound_fen"]),
            f"{Decimal(r['gap']) * 100:.2f}%",
            verdict,
        )
    console.print(rounds)

    prices = _table(
        "Clearing prices by region x family (last posted single-device price, yuan per device-hour; operator view)",
        ["region", "family", "priced model", "price", "family min ask", "free devices", "open demand"],
        ("price", "family min ask", "free devices", "open demand"),
    )
    for cls in s["market"].get("classes", []):
        last = cls.get("last_price")
        if not last:
            continue
        prices.add_row(
            cls["region"],
            cls["family"],
            last["model"],
            yuan(Decimal(last["price_fen_per_device_hour"])),
            yuan(cls["min_ask_fen"]) if cls.get("min_ask_fen") is not None else "-",
            str(cls["offered_devices"]),
            str(cls["demand_devices"]),
        )
    console.print(prices)

    names = {p["id"]: p["name"] for p in s["providers"]} | {b["id"]: b["name"] for b in s["buyers"]}
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(Counter(c["status"] for c in s["contracts"]).items()))
    contracts = _table(
        f"Contracts (after settlement: {statuses})",
        ["buyer", "provider", "region", "model", "devices", "term", "yuan/h buyer / provider", "billing"],
        ("devices", "term", "yuan/h buyer / provider"),
    )
    for c in sorted(s["contracts"], key=lambda c: (c["billing_mode"], c["start_at"])):
        contracts.add_row(
            names.get(c["buyer_id"], c["buyer_id"]),
            names.get(c["provider_id"], c["provider_id"]),
            c["region"],
            c["model"],
            str(c["devices"]),
            _hours(c["end_at"] - c["start_at"]),
            f"{yuan(c['buyer_price_fen'])} / {yuan(c['provider_price_fen'])}",
            c["billing_mode"],
        )
    console.print(contracts)

    money = ("buyers pay (fen)", "yuan", "providers get (fen)", "fee (fen)")
    settle = _table(
        "Settlement by billing mode (one signed record per contract period or milestone)",
        ["billing mode", "contracts", "records", *money, "buyer = provider + fee"],
        ("contracts", "records", *money),
    )
    totals: dict[str, int] = defaultdict(int)
    for mode in BALANCE_MODES:
        m = s["settlement_by_mode"][mode]
        ok = all(r["balanced"] for r in s["settlements"] if r["billing_mode"] == mode)
        settle.add_row(
            mode,
            str(m["contracts"]),
            str(m["records"]),
            f"{m['buyer_debit_fen']:,}",
            yuan(m["buyer_debit_fen"]),
            f"{m['provider_credit_fen']:,}",
            f"{m['fee_fen']:,}",
            "yes" if ok else "NO",
        )
        for k, v in m.items():
            totals[k] += v
    settle.add_row(
        "[bold]total[/]",
        str(totals["contracts"]),
        str(totals["records"]),
        f"{totals['buyer_debit_fen']:,}",
        yuan(totals["buyer_debit_fen"]),
        f"{totals['provider_credit_fen']:,}",
        f"{totals['fee_fen']:,}",
        "yes" if all(r["balanced"] for r in s["settlements"]) else "NO",
    )
    console.print(settle)

    cp, ex, v = s["checkpoint"], s["audit_export"], s["audit_verification"] or {}
    trust = _table("Transparency log and regulator audit", ["what", "result"])
    trust.add_row(
        "ledger checkpoint", f"{cp['origin']} size {cp['size']}, root {cp['root'][:32]}..., key {cp['key_id']}"
    )
    trust.add_row("audit export", f"{ex['id']}: {ex['records_exported']} records, {ex['bundle_bytes']:,} bytes")
    trust.add_row(
        "offline verification",
        f"{'OK' if v.get('ok') else 'FAILED'}: {v.get('records')} records, {v.get('signatures_checked')} signatures, "
        f"{v.get('proofs_checked')} inclusion proofs, exchange key {v.get('exchange_key_id')}"
        + (" (anchored to the pinned key)" if v.get("trusted") else " (NOT anchored to a pinned key)"),
    )
    trust.add_row(
        "clock", f"fast-forwarded {s['clock_fast_forward_seconds'] / 86_400:.1f} days before usage and settlement"
    )
    console.print(trust)
    if demo.bundle_path is not None and kept is not None:
        console.print(f"\n[bold]hetex audit show[/] {demo.bundle_path}")
        run_show(argparse.Namespace(bundle=str(demo.bundle_path), json=False))
        trusted = kept / "keys" / "exchange.pub"
        console.print(f"verify it again: [bold]hetex audit verify {demo.bundle_path} --trusted-key {trusted}[/]")
        console.print(f"participants' keys: {kept / 'keys' / 'participants'}")
    elif demo.bundle_path is not None:
        console.print("\n[bold]audit bundle totals[/] (the bundle is deleted after the demo; --keep DIR keeps it)")
        run_show(argparse.Namespace(bundle=str(demo.bundle_path), json=False))
    console.print(f"\n[green]hetex demo: all {len(s['steps'])} steps succeeded in {s['seconds']:.1f} s[/]")
