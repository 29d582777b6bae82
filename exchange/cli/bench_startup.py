"""`hetex bench cli-startup`: wall time of `hetex` commands against `python -c pass`, measured in the same run
(interleaved rounds, medians), reported as ratios."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange.cli.common import group


def register(sub: argparse._SubParsersAction) -> None:
    """Add `bench cli-startup` to the `bench` group."""
    bsub = group(sub, "bench", "performance benchmarks")
    p = bsub.add_parser("cli-startup", help="start-up time of hetex commands vs `python -c pass` (ratios)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run_startup)


def hetex_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m exchange`."""
    script = Path(sys.executable).parent / "hetex"
    if script.is_file():
        return [str(script)]
    found = shutil.which("hetex")
    return [found] if found else [sys.executable, "-m", "exchange"]


def cases(key: str) -> dict[str, list[str]]:
    """Name -> argv of each measured command (the client verb fails fast on a closed port: start-up only)."""
    hetex = hetex_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "hetex --help": [*hetex, "--help"],
        "hetex contract list --help": [*hetex, "contract", "list", "--help"],
        "hetex order submit --help": [*hetex, "order", "submit", "--help"],
        "hetex market offers (no server)": [*hetex, "market", "offers", "--url", "http://127.0.0.1:9", "--key", key],
    }


def _time(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t0


def measure(rounds: int) -> dict[str, Any]:
    """Median and best seconds per command, and each median's ratio to `python -c pass`."""
    from federation.keys import generate_keypair_files

    with tempfile.TemporaryDirectory() as tmp:
        key, _pub = generate_keypair_files(Path(tmp), "bench")
        env = {**os.environ, "XDG_CONFIG_HOME": tmp}
        env.pop("HETEX_PROFILE", None)
        argvs = cases(str(key))
        samples: dict[str, list[float]] = {name: [] for name in argvs}
        for argv in argvs.values():  # warm the page cache once
            _time(argv, env)
        for _ in range(rounds):
            for name, argv in argvs.items():
                samples[name].append(_time(argv, env))
    base = statistics.median(samples["python -c pass"])
    return {
        "rounds": rounds,
        "python": sys.version.split()[0],
        "commands": {
            name: {
                "median_s": round(statistics.median(s), 4),
                "best_s": round(min(s), 4),
                "ratio_to_python": round(statistics.median(s) / base, 2),
            }
            for name, s in samples.items()
        },
    }


def run_startup(args: argparse.Namespace) -> int:
    """Measure and print."""
    result = measure(args.rounds)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0
    print(f"start-up, {result['rounds']} interleaved rounds, medians (python {result['python']})")
    for name, row in result["commands"].items():
        print(f"  {name:<36} {row['median_s']:.3f} s  best {row['best_s']:.3f} s  x{row['ratio_to_python']:.2f}")
    return 0
