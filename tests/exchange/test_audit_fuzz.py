"""Mutation fuzzer over a real bundle from the service (issue 10): never a crash, bounded memory and time per
mutant, and never an accepted mutant whose meaning (records digest + totals) differs from the original's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.composition import build_services
from exchange.settings import Settings
from federation.keys import SigningKey
from tests import dbs
from tests.exchange.auditkit import ledger_fill
from tests.exchange.test_audit_export import add_regulator
from tests.exchange.test_audit_tamper import _export

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("HETEX_FUZZ_SEED", "20261203"))
MAX_RSS_GROWTH_KIB = 64 * 1024  # peak RSS of the worker beyond its RSS after verifying the original bundle
MAX_SECONDS_PER_MUTANT = 2.0


async def _real_bundle(base: Path) -> tuple[Path, str]:
    url = f"sqlite+aiosqlite:///{base / 'a.db'}"
    dbs.migrate(url)
    svc = await build_services(Settings(database_url=url, key_dir=base / "keys", exports_dir=base / "exp"))
    await svc.identity.init()  # `hetex admin init`
    try:
        reg = await add_regulator(svc)
        await ledger_fill(svc.ledger, SigningKey.generate(), 12)  # small: 5,000 mutants in about a minute
        bundle = await _export(svc, reg, base / "bundle")
        return bundle, svc.identity.signing_key.seed().hex()
    finally:
        await svc.close()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return dbs.run_async(_real_bundle(tmp_path_factory.mktemp("fuzz-base")))


def _fuzz(real: tuple[Path, str], seed: int, count: int) -> dict:
    bundle, key_hex = real
    proc = subprocess.run(
        [sys.executable, "-m", "tests.exchange.auditfuzz", str(bundle), key_hex, str(seed), str(count)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"seed {seed}: {proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    msg = f"seed {seed} (rerun with HETEX_FUZZ_SEED={seed}): {json.dumps(result)[:3000]}"
    assert result["mutants"] + len(result["crashes"]) == count and not result["crashes"], msg
    assert not result["lies"], msg
    assert result["max_rss_kib"] - result["base_rss_kib"] < MAX_RSS_GROWTH_KIB, msg
    assert result["max_seconds"] < MAX_SECONDS_PER_MUTANT, msg
    return result


def test_fuzz_mutants(real: tuple[Path, str]) -> None:
    result = _fuzz(real, SEED, int(os.environ.get("HETEX_FUZZ_COUNT", "5000")))
    assert len(result["codes"]) > 30  # the mutations reach many different checks
    print(json.dumps({k: result[k] for k in ("mutants", "accepted", "max_seconds", "base_rss_kib", "max_rss_kib")}))


@pytest.mark.soak
@pytest.mark.parametrize("offset", range(4))
def test_fuzz_slow_more_mutants(real: tuple[Path, str], offset: int) -> None:
    _fuzz(real, SEED + 1 + offset, 10_000)
