"""Seeded mutation fuzzer for audit bundles (run in a worker process: `python -m tests.exchange.auditfuzz`).

A mutant is the base bundle's files with archive-layer, byte-level, JSON-layer or record-layer mutations,
optionally resealed by the lying exchange (file hashes and counts re-listed, manifest re-signed with the exchange
key; totals are left as signed, so a changed meaning has to be caught). For each mutant the worker verifies with
the exchange key pinned and records: a crash (any exception, or an internal problem), the time taken, and
whether an accepted mutant's meaning (records digest + totals) differs from the original's.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import resource
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from exchange.audit import layout as L
from exchange.audit.verify import verify_bundle
from federation.canonical import canonical_bytes
from federation.dsse import sign_envelope
from federation.keys import SigningKey, key_id_hex

Files = dict[str, bytes]

JSON_FILES = (L.MANIFEST, L.MANIFEST_SIG, L.CATALOGUE)


def load(bundle: Path) -> Files:
    return {p.relative_to(bundle).as_posix(): p.read_bytes() for p in sorted(bundle.rglob("*")) if p.is_file()}


def write_dir(files: Files, out: Path) -> Path:
    for name, data in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return out


def reseal(files: Files, key: SigningKey) -> None:
    import hashlib

    try:
        m = json.loads(files[L.MANIFEST])
        m["files"] = {
            n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)}
            for n, d in sorted(files.items())
            if n not in (L.MANIFEST, L.MANIFEST_SIG)
        }
        m["counts"]["records"] = files.get(L.RECORDS, b"").count(b"\n")
        m["counts"]["proofs"] = files.get(L.PROOFS, b"").count(b"\n")
        data = canonical_bytes(m)
    except Exception:  # the manifest itself was mutated into something else: sign it as it is
        data = files.get(L.MANIFEST, b"")
    origin = "hetex.test/log"
    with contextlib.suppress(Exception):  # keep the default origin
        named = json.loads(data)["exchange"]["origin"]
        if isinstance(named, str) and named:
            origin = named
    files[L.MANIFEST] = data
    env = sign_envelope(L.MANIFEST_PAYLOAD_TYPE, data, [(key_id_hex(origin, key.public), key)])
    files[L.MANIFEST_SIG] = canonical_bytes(env)


# --- JSON-layer value mutations ---------------------------------------------------------------------

WEIRD: list[bytes] = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"123456789012345678901234567890",
    b'"1e100"',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'"x"',
    b"-1",
    b"0.5",
    b'"\\ud800"',
]


def json_mutation(rng: random.Random, data: bytes) -> bytes:
    """A textual JSON mutation: duplicate key, type swap, huge number, NaN, deep nesting."""
    op = rng.randrange(5)
    if op == 0 and data.startswith(b"{"):  # duplicate a member at the front
        colon = data.find(b'":', 1)
        if colon > 0:
            key = data[1 : colon + 1]
            return b"{" + key + b":" + rng.choice(WEIRD) + b"," + data[1:]
    if op == 1:  # replace a scalar after some colon with a value of another type
        colons = [i for i in range(len(data)) if data[i : i + 1] == b":"]
        if colons:
            i = rng.choice(colons) + 1
            j = i
            while j < len(data) and data[j : j + 1] not in (b",", b"}", b"]"):
                j += 1
            return data[:i] + rng.choice(WEIRD) + data[j:]
    if op == 2:  # deep nesting
        depth = rng.choice([100, 5000, 200_000])
        return b'{"deep":' + b"[" * depth + b"]" * depth + b"," + data[1:]
    if op == 3:  # a huge number appended as a member
        return b'{"zz":' + rng.choice(WEIRD[:6]) + b"," + data[1:]
    return data.replace(b",", b", ", 1)  # not canonical


# --- record-layer mutations --------------------------------------------------------------------------


def record_mutation(rng: random.Random, files: Files, key: SigningKey, origin: str) -> None:
    lines = files.get(L.RECORDS, b"").splitlines(keepends=True)
    if not lines:
        return
    op = rng.randrange(6)
    i = rng.randrange(len(lines))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op in (3, 4):  # the lying exchange edits a payload and re-signs the record with its own key
        try:
            index, _raw, env = L.parse_record_line(lines[i])
            import base64

            payload = json.loads(base64.b64decode(env["payload"]))
            field = rng.choice(sorted(payload))
            payload[field] = rng.choice([0, 10**9, "CN-XX", None, [1], {"a": 1}, 1_700_000_000])
            body = canonical_bytes(payload) if op == 3 else json_mutation(rng, canonical_bytes(payload))
            new = sign_envelope(env["payloadType"], body, [(key_id_hex(origin, key.public), key)])
            lines[i] = L.record_line(index, canonical_bytes(new))
        except Exception:
            pass
    else:
        lines[i] = L.record_line(rng.randrange(10**6), b'{"payload":"e30=","payloadType":"x","signatures":[]}')
    files[L.RECORDS] = b"".join(lines)


def byte_mutation(rng: random.Random, files: Files) -> None:
    name = rng.choice(sorted(files))
    data = bytearray(files[name])
    op = rng.randrange(3)
    if not data or op == 0:
        data[rng.randrange(len(data) + 1) : 0] = bytes([rng.randrange(256)])
    elif op == 1:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    else:
        del data[rng.randrange(len(data)) :]
    files[name] = bytes(data)


# --- archive layer -----------------------------------------------------------------------------------


def archive_bytes(rng: random.Random, files: Files) -> bytes:
    """Pack the files as a tar (or tar.gz), with archive-layer mutations."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, data in files.items():
        info = tarfile.TarInfo(f"top/{name}")
        info.size = len(data)
        members.append((info, data))
    op = rng.randrange(9)
    if op == 0 and members:  # duplicate a member, maybe with other content
        info, data = rng.choice(members)
        twin = tarfile.TarInfo(info.name)
        other = data if rng.random() < 0.5 else (data or b"") + b" "
        twin.size = len(other)
        members.insert(rng.randrange(len(members) + 1), (twin, other))
    elif op == 1:
        rng.shuffle(members)  # meaning-preserving
    elif op == 2 and members:
        del members[rng.randrange(len(members))]
    elif op == 3 and members:
        info, _ = rng.choice(members)
        info.name = rng.choice(["top/../x", "/abs", "top/keys/zz.json", "other/manifest.json", "top/a/b/c", "top/"])
    elif op == 4:  # link or special member
        info = tarfile.TarInfo(f"top/{rng.choice(sorted(files) or ['records.jsonl'])}")
        info.type = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE])
        info.linkname = "/dev/zero"
        members.insert(0, (info, None))
    elif op == 5 and members:  # huge pax header
        members[0][0].pax_headers = {"comment": "x" * rng.choice([1000, 100_000, 1_000_000])}
    buf = io.BytesIO()
    mode = "w:gz" if rng.random() < 0.5 else "w"
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    out = buf.getvalue()
    if op == 6:
        out = out[: rng.randrange(len(out))]
    elif op == 7:  # claim a huge size in the first header (checksum is not recomputed: either refused or damaged)
        out = out[:124] + b"77777777777\x00" + out[136:]
    return out


# --- driver ------------------------------------------------------------------------------------------


def mutate(rng: random.Random, base: Files, key: SigningKey, origin: str) -> tuple[Files, bool, bool]:
    """(files, as_archive, resealed)."""
    files = dict(base)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        layer = rng.randrange(4)
        if layer == 0:
            byte_mutation(rng, files)
        elif layer == 1:
            name = rng.choice([*JSON_FILES, *(n for n in files if n.startswith("keys/"))])
            if name in files:
                files[name] = json_mutation(rng, files[name])
        elif layer == 2:
            record_mutation(rng, files, key, origin)
        else:
            name = rng.choice(sorted(files))
            if rng.random() < 0.5:
                del files[name]
            else:
                files[rng.choice(["extra.txt", "keys/0000000g.json", L.CONSISTENCY])] = files[name]
    resealed = rng.random() < 0.5
    if resealed:
        reseal(files, key)
    return files, rng.random() < 0.4, resealed


def peak_rss_kib() -> int:
    """Peak RSS of this process image: VmHWM (reset by exec), not ru_maxrss (Linux carries the forking parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(base_dir: Path, seed_key: bytes, seed: int, count: int) -> dict[str, Any]:
    key = SigningKey.from_seed(seed_key)
    base = load(base_dir)
    origin = json.loads(base[L.MANIFEST])["exchange"]["origin"]
    original = verify_bundle(base_dir, trusted_keys=[key.public])
    assert original.trusted, [str(p) for p in original.problems]
    meaning = (original.records_sha256, original.totals)
    base_rss = peak_rss_kib()
    out: dict[str, Any] = {"mutants": 0, "accepted": 0, "max_seconds": 0.0, "crashes": [], "lies": [], "codes": {}}
    work = Path(tempfile.mkdtemp(prefix="hetex-fuzz-"))
    try:
        for n in range(count):
            rng = random.Random(f"{seed}:{n}")
            files, as_archive, resealed = mutate(rng, base, key, origin)
            target = work / f"m{n}"
            if as_archive:
                target = target.with_suffix(".tar")
                target.write_bytes(archive_bytes(rng, files))
            else:
                write_dir(files, target)
            t0 = time.perf_counter()
            try:
                report = verify_bundle(target, trusted_keys=[key.public])
            except Exception:
                out["crashes"].append({"mutant": n, "traceback": traceback.format_exc()[-2000:]})
                continue
            finally:
                out["max_seconds"] = max(out["max_seconds"], time.perf_counter() - t0)
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            out["mutants"] += 1
            for code in report.codes():
                out["codes"][code] = out["codes"].get(code, 0) + 1
            if "resource_exhausted" in report.codes():
                out["crashes"].append({"mutant": n, "problems": [str(p) for p in report.problems][:5]})
            if report.ok:
                out["accepted"] += 1
                if (report.records_sha256, report.totals) != meaning:
                    out["lies"].append({"mutant": n, "resealed": resealed, "archive": as_archive})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["max_rss_kib"] = peak_rss_kib()
    out["base_rss_kib"] = base_rss
    return out


if __name__ == "__main__":
    base_dir, seed_hex, seed, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(run(base_dir, bytes.fromhex(seed_hex), seed, count)))
