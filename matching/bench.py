"""Matching benchmark: one generated instance cleared by the optimizer and both baselines against the
shared LP bound, with build/solve time and peak memory, from one run (used by `hetex bench match`)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from matching.clearing import finalize, run_method
from matching.eligibility import prepare
from matching.generators import generate
from matching.relaxation import build_network

Progress = Callable[[str, float], None]


def _peak_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def run_match_bench(
    family: str,
    orders: int,
    pools: int,
    seed: int,
    progress: Progress | None = None,
    *,
    prices: bool = False,
    exact: float | None = None,
) -> dict[str, Any]:
    """Generate, clear with mcf / greedy / fifo on the same arrays, and report ratios from one run.

    exact: also solve the whole integer model (HiGHS, warm-started from the optimizer's allocation) with
    this many wall-clock seconds, and report the optimizer's loss against the best integer solution found
    and the solver's proven bound (an upper bound on the integer optimum, at most the LP bound)."""

    def step(name: str, frac: float) -> None:
        if progress is not None:
            progress(name, frac)

    step("generate", 0.0)
    t0 = time.perf_counter()
    market = generate(family, orders, pools, seed)
    gen_s = time.perf_counter() - t0
    step("prepare", 0.1)
    t0 = time.perf_counter()
    c0 = time.process_time()
    prep = prepare(market)
    net = build_network(prep)
    build_s = time.perf_counter() - t0
    build_cpu = time.process_time() - c0
    out: dict[str, Any] = {
        "family": family,
        "orders": orders,
        "pools": pools,
        "seed": seed,
        "edges": len(prep.e_order),
        "edges_per_order": round(len(prep.e_order) / max(1, orders), 2),
        "generate_seconds": round(gen_s, 3),
        "build_seconds": round(build_s, 3),
    }
    rel = None
    for i, method in enumerate(("mcf", "greedy", "fifo")):
        step(method, 0.2 + 0.25 * i)
        c0 = time.process_time()
        placer, r, solve_s = run_method(prep, net, method)
        out[f"{method}_cpu_seconds"] = round(time.process_time() - c0, 3)
        if r is not None:
            rel = r
        assert rel is not None
        res = finalize(prep, net, rel, placer, method, build_s, solve_s, prices=prices and method == "mcf")
        s = res.stats
        out[f"{method}_welfare_fen"] = s.welfare_fen
        out[f"{method}_gap"] = str(s.gap)
        out[f"{method}_solve_seconds"] = round(solve_s, 3)
        out[f"{method}_matched_devices"] = s.matched_devices
        out[f"{method}_audit_ok"] = res.audit.ok
        if method == "mcf":
            out["lp_bound_fen"] = s.lp_bound_fen
            out["bound_method"] = s.bound_method
            out["bound_seconds"] = round(rel.solve_seconds, 3)
            # best proven bound (the integer model's root bound where the clearing computed one) and the gap to it
            out["bound_fen"] = s.bound_fen
            out["bound_gap"] = str(s.bound_gap)
            out["components"] = s.components
            out["matched_orders"] = s.matched_orders
            out["price_seconds"] = s.price_seconds
            out["wall_seconds"] = round(build_s + solve_s, 3)
            # CPU seconds of this process: close to the wall time on a quiet machine (single-threaded)
            out["build_cpu_seconds"] = round(build_cpu, 3)
            out["cpu_seconds"] = round(build_cpu + out["mcf_cpu_seconds"], 3)
            out["envy_violations"] = res.audit.envy_violations
            out["prices_method"] = res.stats.prices_method
            out["prices_present"] = bool(res.prices)
            out["limits_hit"] = list(s.limits_hit)
            if exact is not None:
                step("exact", 0.3)
                out.update(_exact_report(prep, net, placer, rel.value, exact))
    out["welfare_fen"] = out["mcf_welfare_fen"]
    out["gap"] = out["mcf_gap"]
    out["matched_devices"] = out["mcf_matched_devices"]
    out["solve_seconds"] = out["mcf_solve_seconds"]
    out["supply_devices"] = int(sum(p.devices for p in market.pools))
    for b in ("greedy", "fifo"):
        w = out[f"{b}_welfare_fen"]
        out[f"mcf_over_{b}"] = (
            str((Decimal(out["mcf_welfare_fen"]) / Decimal(w)).quantize(Decimal("0.0001"))) if w else "inf"
        )
    out["peak_memory_mb"] = round(_peak_mb(), 1)
    step("done", 1.0)
    return out


def _exact_report(prep: Any, net: Any, placer: Any, lp_value: float, seconds: float) -> dict[str, Any]:
    """The whole integer model solved within `seconds`: its best welfare, bound, and our loss against both."""
    import numpy as np

    from matching.mip import count_candidates, solve_mip

    everyone = np.ones(prep.n_orders, dtype=bool)
    c0 = time.process_time()
    res = solve_mip(prep, net, time_limit=seconds, hint=placer)
    out: dict[str, Any] = {"exact_columns": count_candidates(prep, everyone)}
    if res is None or res.status == "failed":
        out["exact_status"] = "failed"
        return out
    ours = placer.welfare_units()
    best = max(res.value, float(ours))
    bound = min(res.bound, lp_value) if res.bound > 0 else lp_value
    q = Decimal("1e-7")

    def ratio_gap(a: float, b: float) -> str:
        return str((Decimal(1) - Decimal(repr(float(a))) / Decimal(repr(float(b)))).quantize(q)) if b else "0"

    out.update(
        {
            "exact_status": res.status,
            "exact_welfare_fen": int(best) // 3600,
            "exact_bound_fen": int(bound) // 3600,
            "exact_seconds": round(res.seconds, 3),
            "exact_cpu_seconds": round(time.process_time() - c0, 3),
            "exact_nodes": res.nodes,
            # the optimizer against the best integer solution found, and that solution against its bound
            "loss_to_exact": ratio_gap(ours, best),
            "exact_bound_gap": ratio_gap(best, bound),
            # how far the proven integer bound sits below the LP bound (the relaxation's own gap)
            "exact_bound_below_lp": ratio_gap(bound, lp_value),
        }
    )
    return out


def format_report(r: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows (label, value) for a human-readable report."""

    def pct(g: str) -> str:
        return f"{Decimal(g) * 100:.4f}%"

    return [
        ("instance", f"{r['family']} {r['orders']} orders x {r['pools']} pools, seed {r['seed']}"),
        (
            "edges (order-class-start)",
            f"{r['edges']} ({r['edges_per_order']} per order), {r['components']} components",
        ),
        ("LP bound", f"{r['lp_bound_fen']} fen ({r['bound_method']}, {r['bound_seconds']} s)"),
        ("welfare (mcf + repair)", f"{r['welfare_fen']} fen, gap {pct(r['gap'])}"),
        ("proven bound", f"{r['bound_fen']} fen, gap {pct(r['bound_gap'])}"),
        ("greedy price-time", f"{r['greedy_welfare_fen']} fen, gap {pct(r['greedy_gap'])}"),
        ("FIFO first-fit", f"{r['fifo_welfare_fen']} fen, gap {pct(r['fifo_gap'])}"),
        ("matched devices", f"{r['matched_devices']} of {r['supply_devices']} supplied"),
        ("build / solve / wall", f"{r['build_seconds']} s / {r['solve_seconds']} s / {r['wall_seconds']} s"),
        ("CPU build+solve", f"{r.get('cpu_seconds', '-')} s (quiet-machine estimate)"),
        ("peak memory", f"{r['peak_memory_mb']} MB"),
        ("audit ok (mcf/greedy/fifo)", f"{r['mcf_audit_ok']}/{r['greedy_audit_ok']}/{r['fifo_audit_ok']}"),
        ("prices", f"{r.get('prices_method', '-')}"),
    ] + (
        [
            (
                "exact integer model",
                f"{r['exact_status']}: best {r['exact_welfare_fen']} fen, bound {r['exact_bound_fen']} fen, "
                f"{r['exact_seconds']} s; optimizer loss {pct(r['loss_to_exact'])}, "
                f"bound gap {pct(r['exact_bound_gap'])}",
            )
        ]
        if "exact_welfare_fen" in r
        else []
    )
