"""`hetex match` starts fast: help and a real clearing of a small snapshot import no exchange service,
database, HTTP server, pandas or CP-SAT (checked through sys.modules of a fresh interpreter, never by
timing); HiGHS comes in only when a gang repair needs it, the LP solver only when prices are wanted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from matching.generators import generate
from matching.model import Market, Order

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("sqlalchemy", "pandas", "ortools.sat", "exchange.services", "exchange.api", "exchange.composition", "aiohttp")


def modules_after(argv: list[str], tmp_path: Path) -> set[str]:
    """sys.modules of a fresh interpreter after `hetex <argv>` (its output discarded)."""
    script = (
        "import io, json, sys, contextlib\n"
        "from exchange.cli.main import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def single_device_snapshot(tmp_path: Path) -> Path:
    """A snapshot of single-device orders: the relaxation is integral, so no CP-SAT repair is needed."""
    m = generate("scale", 200, 40, 1)
    orders = tuple(Order(**{**o.__dict__, "quantity_devices": 1}) for o in m.orders)
    path = tmp_path / "market.json"
    path.write_text(Market(**{**m.__dict__, "orders": orders}).to_json(), encoding="utf-8")
    return path


def test_match_help_loads_no_solver(tmp_path: Path) -> None:
    mods = modules_after(["match", "--help"], tmp_path)
    assert loaded(mods, (*NEVER, "matching", "numpy", "ortools", "asyncio")) == []


def test_real_match_loads_no_exchange_database_pandas_or_cp_sat(tmp_path: Path) -> None:
    path = str(single_device_snapshot(tmp_path))
    mods = modules_after(["match", "--market", path, "--json"], tmp_path)
    assert "matching.clearing" in mods and "ortools.linear_solver.pywraplp" in mods  # it cleared, with prices
    assert loaded(mods, NEVER) == []
    mods = modules_after(["match", "--market", path, "--json", "--no-prices"], tmp_path)
    assert "matching.clearing" in mods
    assert loaded(mods, (*NEVER, "ortools.linear_solver")) == []
