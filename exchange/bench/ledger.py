"""Ledger benchmark: signed appends (single and batched), proofs and checkpoints vs raw Ed25519, on SQLite.

Everything runs in one process on a temporary SQLite file (WAL, synchronous=NORMAL: the embedded
default), so the raw Ed25519 rates measured in the same run are the ceiling the append rate is
compared with.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from exchange.services.identity import IdentityService
from exchange.services.ledger import LedgerService
from exchange.storage.engine import make_engine, make_sessionmaker
from exchange.storage.migrate import upgrade_engine
from federation.canonical import canonical_bytes
from federation.dsse import pae
from federation.keys import SigningKey
from federation.merkle import verify_consistency, verify_inclusion

ORIGIN = "bench.hetex/log"
PAYLOAD_TYPE = "application/vnd.hetex.settlement+json"


def sample_record(i: int) -> dict[str, Any]:
    """A settlement-sized record (about 400 bytes of canonical JSON)."""
    return {
        "id": f"0192f3a0-0000-7000-8000-{i:012d}",
        "contract_id": f"0192f3a0-1111-7000-8000-{i:012d}",
        "billing_mode": "per_minute",
        "period": {"start": 1_760_000_000 + 3600 * i, "end": 1_760_003_600 + 3600 * i},
        "usage_ids": [f"0192f3a0-2222-7000-8000-{i:012d}"],
        "postings": [
            {"account": "buyer:0192f3a0-3333", "debit_fen": 123_456 + i},
            {"account": "provider:0192f3a0-4444", "credit_fen": 122_222 + i},
            {"account": "exchange:fees", "credit_fen": 1_234},
        ],
        "rounding": "half_even",
        "supersedes": None,
    }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def raw_ed25519(n: int) -> dict[str, float]:
    """Sign and verify `n` DSSE PAE messages of a sample record: the cryptographic ceiling."""
    key = SigningKey.generate()
    messages = [pae(PAYLOAD_TYPE, canonical_bytes(sample_record(i))) for i in range(n)]
    t0 = time.perf_counter()
    sigs = [key.sign(m) for m in messages]
    t1 = time.perf_counter()
    public = key.public
    for m, s in zip(messages, sigs, strict=True):
        public.verify(s, m)
    t2 = time.perf_counter()
    return {"sign_per_s": _rate(n, t1 - t0), "verify_per_s": _rate(n, t2 - t1)}


async def run_ledger_bench(
    *, records: int = 10_000, batch: int = 1000, single: int | None = None, proofs: int = 1000, seed: int = 1
) -> dict[str, Any]:
    """Run every measurement and return the figures (rates per second, ratios to raw Ed25519)."""
    if records < 1 or batch < 1 or proofs < 1:
        raise ValueError("records, batch and proofs must be positive")
    single = max(1, records // 5) if single is None else single
    rng = random.Random(seed)
    raw = raw_ed25519(min(max(records, 1000), 20_000))
    with tempfile.TemporaryDirectory(prefix="hetex-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        try:
            await upgrade_engine(engine)
            sessions = make_sessionmaker(engine)
            identity = IdentityService(sessions, Path(tmp) / "keys", ORIGIN)
            await identity.init()
            ledger = LedgerService(sessions, identity, ORIGIN)

            t0 = time.perf_counter()
            for i in range(single):
                async with sessions.begin() as session:
                    await ledger.append(session, "settlement", f"s-{i}", sample_record(i))
            t_single = time.perf_counter() - t0

            t0 = time.perf_counter()
            done = 0
            while done < records:
                n = min(batch, records - done)
                async with sessions.begin() as session:
                    await ledger.append_many(
                        session,
                        [("settlement", f"b-{single + done + j}", sample_record(single + done + j)) for j in range(n)],
                    )
                done += n
            t_batch = time.perf_counter() - t0

            t0 = time.perf_counter()
            cp = await ledger.checkpoint()
            t_cp = time.perf_counter() - t0
            size = cp.size

            indices = [rng.randrange(size) for _ in range(proofs)]
            t0 = time.perf_counter()
            inc = []
            async with sessions() as session:
                for index in indices:
                    inc.append(await ledger.inclusion_proof(index, size, session))
            t_inc = time.perf_counter() - t0
            t0 = time.perf_counter()
            bulk = await ledger.inclusion_proofs(indices, size)
            t_bulk = time.perf_counter() - t0
            assert [b.hashes for b in bulk] == [p.hashes for p in inc]
            t0 = time.perf_counter()
            for p in inc:
                verify_inclusion(p.leaf_hash, p.index, size, p.hashes, cp.root)
            t_inc_v = time.perf_counter() - t0

            olds = [rng.randrange(1, size + 1) for _ in range(proofs)]
            t0 = time.perf_counter()
            con = []
            async with sessions() as session:
                for old in olds:
                    con.append(await ledger.consistency_proof(old, size, session))
            t_con = time.perf_counter() - t0
            t0 = time.perf_counter()
            for c in con:
                verify_consistency(c.size1, size, c.hashes, c.root1, cp.root)
            t_con_v = time.perf_counter() - t0

            t0 = time.perf_counter()
            report = await ledger.verify_log()
            t_verify = time.perf_counter() - t0
            if not report.ok:
                raise RuntimeError("benchmark log does not verify: " + report.problems[0].describe())
        finally:
            await engine.dispose()

    single_rate = _rate(single, t_single)
    batch_rate = _rate(records, t_batch)
    return {
        "database": "sqlite (temporary file, WAL, synchronous=NORMAL)",
        "log_size": size,
        "python_switch_interval_s": sys.getswitchinterval(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "ed25519": raw,
        "append_single_tx": {"records": single, "seconds": round(t_single, 3), "per_s": single_rate},
        "append_batched": {"records": records, "batch": batch, "seconds": round(t_batch, 3), "per_s": batch_rate},
        "checkpoint_ms": round(t_cp * 1000, 2),
        "inclusion_proof": {
            "count": proofs,
            "generate_per_s": _rate(proofs, t_inc),
            "generate_bulk_per_s": _rate(proofs, t_bulk),
            "verify_per_s": _rate(proofs, t_inc_v),
        },
        "consistency_proof": {
            "count": proofs,
            "generate_per_s": _rate(proofs, t_con),
            "verify_per_s": _rate(proofs, t_con_v),
        },
        "verify_log_entries_per_s": _rate(report.entries_checked, t_verify),
        "ratios": {
            "append_batched_to_sign": round(batch_rate / raw["sign_per_s"], 3),
            "append_single_to_sign": round(single_rate / raw["sign_per_s"], 3),
            "verify_log_to_verify": round(_rate(report.entries_checked, t_verify) / raw["verify_per_s"], 3),
        },
        "target_append_per_s": 5000,
        "target_met": batch_rate >= 5000,
    }


def format_report(r: dict[str, Any]) -> str:
    """Human-readable summary of run_ledger_bench's figures."""
    lines = [
        f"ledger benchmark on {r['database']}, log size {r['log_size']} "
        f"(load {r['load_average_1m']} on {r['cpus']} CPUs, switch interval {r['python_switch_interval_s']} s)",
        f"  raw Ed25519:          sign {r['ed25519']['sign_per_s']:>10,.0f}/s   "
        f"verify {r['ed25519']['verify_per_s']:>10,.0f}/s",
        f"  append, 1 per tx:     {r['append_single_tx']['per_s']:>10,.0f}/s   "
        f"({r['ratios']['append_single_to_sign']:.1%} of raw sign)",
        f"  append, {r['append_batched']['batch']} per tx: {r['append_batched']['per_s']:>10,.0f}/s   "
        f"({r['ratios']['append_batched_to_sign']:.1%} of raw sign; target 5,000/s "
        f"{'met' if r['target_met'] else 'NOT met'})",
        f"  inclusion proofs:     generate {r['inclusion_proof']['generate_per_s']:>10,.0f}/s   "
        f"verify {r['inclusion_proof']['verify_per_s']:>10,.0f}/s   "
        f"bulk (inclusion_proofs) {r['inclusion_proof']['generate_bulk_per_s']:>10,.0f}/s",
        f"  consistency proofs:   generate {r['consistency_proof']['generate_per_s']:>10,.0f}/s   "
        f"verify {r['consistency_proof']['verify_per_s']:>10,.0f}/s",
        f"  checkpoint:           {r['checkpoint_ms']} ms",
        f"  verify_log:           {r['verify_log_entries_per_s']:>10,.0f} entries/s "
        f"({r['ratios']['verify_log_to_verify']:.1%} of raw verify)",
    ]
    return "\n".join(lines) + "\n"
