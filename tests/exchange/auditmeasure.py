"""Measurements behind specs/audit-verifier.md section 6 (not a test; run by hand):

python -m tests.exchange.auditmeasure big 200000 /tmp/big      # /tmp/big.tar.gz + /tmp/big.pub (MemLog + BundleWriter)
python -m tests.exchange.auditmeasure bomb /tmp/bomb.tar.gz    # 1 GiB of zeros as records.jsonl, ~1 MiB gzip
python -m tests.exchange.auditmeasure rss /tmp/big.tar.gz [/tmp/big.pub]   # peak RSS and CPU of verify_bundle
"""

from __future__ import annotations

import gzip
import resource
import sys
import tarfile
import time
from pathlib import Path


def big(n: int, out: Path) -> None:
    """A signed bundle of n records (contract, usage, settlement in turn) from the same writer the service uses."""
    import shutil

    from exchange.audit.writer import pack
    from tests.exchange.auditkit import MemLog, fill, write_bundle

    log = MemLog()
    fill(log, n)
    shutil.rmtree(out, ignore_errors=True)
    write_bundle(log, out, block_size=1024)
    pack(out, out.with_suffix(".tar.gz"), "hetex-audit-big")
    out.with_suffix(".pub").write_text(log.key.public.to_base64() + "\n")


class _Zeros:
    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int) -> bytes:
        size = min(size, self.left)
        self.left -= size
        return bytes(size)


def bomb(out: Path, size: int = 1 << 30) -> None:
    """A .tar.gz whose records.jsonl inflates to `size` bytes of zeros."""
    with (
        open(out, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w|") as tar,  # type: ignore[call-overload]
    ):
        info = tarfile.TarInfo("hetex-audit-x/records.jsonl")
        info.size = size
        tar.addfile(info, _Zeros(size))  # type: ignore[arg-type]


def rss(bundle: str, key: str | None) -> None:
    """Print status, wall and CPU seconds, RSS after imports and peak RSS of one verify_bundle call."""
    from exchange.audit.verify import verify_bundle
    from federation.keys import load_public_key

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trusted = [load_public_key(Path(key))] if key else None
    t, c = time.perf_counter(), time.process_time()
    r = verify_bundle(bundle, trusted_keys=trusted)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    codes = ",".join(sorted(r.codes()))
    print(
        f"{bundle}: {r.status} {codes} records {r.records} wall {wall:.2f} s cpu {cpu:.2f} s "
        f"rss after import {before / 1024:.1f} MiB peak {peak / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "big":
        big(int(rest[0]), Path(rest[1]))
    elif cmd == "bomb":
        bomb(Path(rest[0]))
    else:
        rss(rest[0], rest[1] if len(rest) > 1 else None)
