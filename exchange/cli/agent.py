"""`hetex agent`: run the provider's node agent, read a device tool once, show the journal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from exchange.cli.common import CliError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `agent` verbs."""
    p = sub.add_parser("agent", help="the provider's node agent: devices, heartbeats, metered signed usage")
    asub = p.add_subparsers(dest="agent_command", required=True)
    run = asub.add_parser("run", help="run the agent (config file: exchange URL, site, node key, source)")
    run.add_argument("--config", required=True, help="the agent's TOML config file")
    run.add_argument("--once", action="store_true", help="one scan/heartbeat/meter/send step, then exit")
    run.set_defaults(func=run_agent)
    scan = asub.add_parser("scan", help="read a device source once and print the devices it reports")
    scan.add_argument("--source", required=True, help="a vendor tool (nvidia-smi, npu-smi, ...) or 'simulated'")
    scan.add_argument("--file", help="parse this saved output (or simulated state) instead of running the tool")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=run_scan)
    st = asub.add_parser("status", help="the journal: reports waiting, bytes on disk, per-contract totals")
    st.add_argument("--config", required=True)
    st.set_defaults(func=run_status)


def _config(path: str) -> Any:
    from exchange.agent.config import AgentConfigError, load_config

    try:
        return load_config(Path(path))
    except AgentConfigError as exc:
        raise CliError(exc.message) from None


def run_agent(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (or one step with --once)."""
    import asyncio
    import signal

    from exchange.agent import logs
    from exchange.agent.discovery import make_source
    from exchange.agent.runner import Agent
    from exchange.cli.client_common import load_key
    from exchange.client import HetexClient
    from identifiers.catalogue import load_catalogue

    cfg = _config(args.config)
    key = load_key(str(cfg.key))
    logs.setup()
    source = make_source(
        cfg.source,
        source_file=cfg.source_file,
        node=cfg.kubernetes_node,
        catalogue=load_catalogue(),
        overrides=cfg.model_overrides,
    )

    async def go() -> None:
        async with HetexClient(cfg.exchange_url, key, timeout=cfg.request_timeout) as client:
            agent = Agent(cfg, client, source)
            try:
                if args.once:
                    await agent.step(heartbeat=True)
                    return
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, agent.stop)
                await agent.run()
            finally:
                agent.journal.close()

    asyncio.run(go())
    return 0


def run_scan(args: argparse.Namespace) -> int:
    """Print the devices of one reading of a source."""
    import asyncio

    from exchange.agent.discovery import SimulatedSource, ToolSource
    from exchange.agent.sources.model import SourceParseError
    from exchange.agent.sources.registry import TOOLS

    if args.source != "simulated" and args.source not in TOOLS:
        raise CliError(f"--source: unknown tool {args.source!r} (one of: simulated, {', '.join(sorted(TOOLS))})")
    if args.source == "simulated" and not args.file:
        raise CliError("--file: the simulated source needs its state file")
    path = Path(args.file) if args.file else None
    if path is not None and not path.is_file():
        raise CliError(f"--file: {path} not found")
    source = SimulatedSource(path) if args.source == "simulated" and path else ToolSource(args.source, path)
    try:
        scan = asyncio.run(source.scan())
    except SourceParseError as exc:
        raise CliError(exc.message) from None
    rows = [
        {
            "index": d.index,
            "uid": d.uid,
            "product": d.product,
            "model": d.model,
            "healthy": d.healthy,
            "utilization_pct": d.utilization_pct,
            "note": d.note,
        }
        for d in scan.devices
    ]
    if args.json:
        print(json.dumps({"tool": scan.tool, "devices": rows, "healthy_by_model": scan.healthy_by_model()}))
    else:
        for r in rows:
            state = "ok" if r["healthy"] else "FAILED"
            util = "-" if r["utilization_pct"] is None else f"{r['utilization_pct']}%"
            print(f"{r['index']:>4}  {r['model'] or 'unmapped':<16} {state:<7} {util:>5}  {r['product']}  {r['uid']}")
        print(f"healthy: {scan.healthy_by_model() or 'none'}", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the journal's state as JSON."""
    from exchange.agent.journal import Journal

    cfg = _config(args.config)
    if not cfg.journal.exists():
        raise CliError(f"no journal at {cfg.journal} (has the agent run?)")
    journal = Journal(cfg.journal, max_bytes=cfg.journal_max_bytes)
    try:
        print(
            json.dumps(
                {
                    "site": cfg.site,
                    "meter_id": cfg.meter,
                    "pending": journal.depth(),
                    "bytes": journal.size_bytes(),
                    "full": journal.full,
                    "contracts": journal.totals(),
                },
                indent=2,
            )
        )
    finally:
        journal.close()
    return 0
