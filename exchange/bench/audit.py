"""Audit export benchmark: N records through LedgerService.append_many, exported, verified, vs raw Ed25519.

Runs in one process on a temporary SQLite file (the embedded default). Reports the export's wall time
and its memory (Python heap peak under tracemalloc in a second, traced export; process peak RSS), and
the standalone verifier's throughput next to the raw Ed25519 verification rate measured in the same run.
"""

from __future__ import annotations

import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from exchange.audit.verify import verify_bundle
from exchange.composition import Services, build_services
from exchange.services.audit import ExportRequest
from exchange.settings import Settings
from exchange.storage.base import now_s
from exchange.storage.migrate import upgrade_engine
from exchange.storage.participants import Participant
from federation.canonical import canonical_bytes
from federation.dsse import pae
from federation.keys import SigningKey
from identifiers.ids import new_id_str

REGIONS = ("CN-GZ", "CN-NM", "CN-NX", "CN-GS", "CN-SH", "CN-BJ", "CN-GD", "CN-SC")
MODELS = ("NV-H100-SXM", "NV-A100-80G-SXM", "HW-910C", "CAM-MLU370-X8", "MT-S4000", "AMD-MI300X")
MODES = ("per_minute", "compute_tier", "subscription", "project")
T0 = 1_760_000_000


def bench_record(i: int, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """One (record type, id, body) of a realistic mix: contracts, usage and settlements in turn."""
    region, buyer, model, mode = rng.choice(REGIONS), rng.choice(REGIONS), rng.choice(MODELS), rng.choice(MODES)
    cri = f"CRI1:HX:{region}:OP{i % 5}:S{i % 3}:P{i % 11}:{model}:X"
    kind = ("contract", "usage", "settlement")[i % 3]
    rid = f"0192f3a0-0000-7000-8000-{i:012d}"
    body: dict[str, Any] = {"id": rid, "at": T0 + 60 * i, "pool_cri": cri}
    if kind == "contract":
        body.update(model=model, region=region, buyer_region=buyer, billing_mode=mode, devices=rng.randint(1, 8))
    elif kind == "usage":
        body.update(contract_id=rid, device_minutes=60 * rng.randint(1, 8), seq=i)
    else:
        body.update(
            model=model,
            region=region,
            buyer_region=buyer,
            billing_mode=mode,
            buyer_debit_fen=rng.randint(1_000, 5_000_000),
            device_hours=str(rng.randint(1, 64)),
        )
    return kind, rid, body


def raw_ed25519_verify(n: int) -> float:
    """Ed25519 verifications per second of DSSE PAE messages of bench records (the ceiling)."""
    key = SigningKey.generate()
    rng = random.Random(7)
    msgs = [pae("application/vnd.hetex.settlement+json", canonical_bytes(bench_record(i, rng)[2])) for i in range(n)]
    sigs = [key.sign(m) for m in msgs]
    public = key.public
    t0 = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        public.verify(s, m)
    return n / (time.perf_counter() - t0)


def _rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1 << 20) if sys.platform == "darwin" else rss / 1024, 1)


async def _export(svc: Services, reg: str, **body: Any) -> tuple[float, Path, Any]:
    t0 = time.perf_counter()
    req = ExportRequest.model_validate({"from": 0, "to": 2**40, **body})
    st = await svc.audit.create_export(reg, req)
    await svc.audit.wait(st.id)
    seconds = time.perf_counter() - t0
    status = await svc.audit.status(reg, st.id)
    if status.status != "done":
        raise RuntimeError(f"export failed: {status.error}")
    return seconds, await svc.audit.bundle_path(reg, st.id), status


async def run_audit_bench(records: int, batch: int = 1000, ed25519: int = 5000) -> dict[str, Any]:
    """Append `records` through the ledger, export them twice (timed; traced), verify; return the figures."""
    with tempfile.TemporaryDirectory(prefix="hetex-bench-audit-") as tmp:
        base = Path(tmp)
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{base / 'bench.db'}",
            key_dir=base / "keys",
            exports_dir=base / "exports",
            origin="bench.hetex/log",
        )
        svc = await build_services(settings)
        try:
            assert svc.engine is not None
            await upgrade_engine(svc.engine)
            await svc.identity.init()
            key = SigningKey.generate()
            reg = new_id_str()
            async with svc.sessions.begin() as session:
                session.add(
                    Participant(
                        id=reg,
                        role="regulator",
                        name="bench-regulator",
                        public_key=key.public.to_base64(),
                        key_id=key.public.key_id("bench-regulator").hex(),
                        status="active",
                        created_at=now_s(),
                    )
                )
            rng = random.Random(1)
            t0 = time.perf_counter()
            for lo in range(0, records, batch):
                items = [bench_record(i, rng) for i in range(lo, min(records, lo + batch))]
                async with svc.sessions.begin() as session:
                    await svc.ledger.append_many(session, items)
            append_s = time.perf_counter() - t0
            rss_before = _rss_mb()
            export_s, archive, status = await _export(svc, reg)
            rss_after = _rss_mb()
            tracemalloc.start()
            traced_s, _archive2, _ = await _export(svc, reg, region="CN-GZ")
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            t1 = time.perf_counter()
            report = verify_bundle(archive, trusted_keys=[svc.identity.public_key])
            verify_s = time.perf_counter() - t1
            if not report.ok:
                raise RuntimeError(f"bundle does not verify: {report.problems[:3]}")
            raw = raw_ed25519_verify(ed25519)
            verify_rate = report.records / verify_s
            return {
                "records": records,
                "append_seconds": round(append_s, 2),
                "append_records_per_s": round(records / append_s, 1),
                "export_seconds": round(export_s, 2),
                "export_records_per_s": round(records / export_s, 1),
                "export_bundle_bytes": status.bundle_bytes,
                "export_traced_seconds": round(traced_s, 2),
                "export_python_heap_peak_mb": round(peak / (1 << 20), 1),
                "process_peak_rss_mb_before_export": rss_before,
                "process_peak_rss_mb_after_export": rss_after,
                "verify_seconds": round(verify_s, 2),
                "verify_records_per_s": round(verify_rate, 1),
                "raw_ed25519_verify_per_s": round(raw, 1),
                "verify_vs_raw_ed25519": round(verify_rate / raw, 3),
                "verified_ok": report.ok,
            }
        finally:
            await svc.close()


def format_report(r: dict[str, Any]) -> str:
    """Human-readable lines."""
    return (
        f"records appended (LedgerService.append_many): {r['records']} in {r['append_seconds']} s "
        f"({r['append_records_per_s']:,.0f}/s)\n"
        f"export (background job, bundle {r['export_bundle_bytes']:,} bytes): {r['export_seconds']} s "
        f"({r['export_records_per_s']:,.0f} records/s)\n"
        f"export memory: Python heap peak {r['export_python_heap_peak_mb']} MB (tracemalloc, traced export "
        f"{r['export_traced_seconds']} s); process peak RSS {r['process_peak_rss_mb_before_export']} MB before, "
        f"{r['process_peak_rss_mb_after_export']} MB after the export\n"
        f"verify (standalone, .tar.gz): {r['verify_seconds']} s = {r['verify_records_per_s']:,.0f} records/s; "
        f"raw Ed25519 verify {r['raw_ed25519_verify_per_s']:,.0f}/s; ratio {r['verify_vs_raw_ed25519']}\n"
    )
