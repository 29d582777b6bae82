"""Tamper tests on real bundles (log written through LedgerService, exported by AuditService): each change is
detected and named by the standalone verifier (exit 1); untouched bundles verify (exit 0)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.audit import layout as L
from exchange.audit.verify import verify_bundle
from exchange.cli.main import main
from exchange.composition import build_services
from exchange.services.audit import ExportRequest
from exchange.settings import Settings
from exchange.storage.identity import ExchangeKey
from federation.canonical import canonical_bytes
from federation.dsse import sign_envelope
from federation.keys import SigningKey, key_id_hex
from tests import dbs
from tests.exchange.auditkit import MemLog, fill, ledger_fill, write_bundle
from tests.exchange.test_audit_export import add_regulator


@dataclass
class Bundles:
    first: Path  # export of the first 40 records
    second: Path  # 40 + 30 records a day later, carrying a consistency proof from 40
    filtered: Path  # another export of the same log (region filter)
    rewritten: Path  # same exchange key, a log whose record 3 was rewritten, then grown to 70
    foreign: Path  # another exchange's bundle
    first_checkpoint: str
    exchange_pub: Path


async def _export(svc: Any, reg: str, dest: Path, **body: Any) -> Path:
    body.setdefault("from", 0)
    body.setdefault("to", 2**40)
    st = await svc.audit.create_export(reg, ExportRequest.model_validate(body))
    await svc.audit.wait(st.id)
    st = await svc.audit.status(reg, st.id)
    assert st.status == "done", st.error
    archive = await svc.audit.bundle_path(reg, st.id)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())  # noqa: ASYNC240
    return top


async def _build(base: Path) -> Bundles:
    node = SigningKey.generate()
    url = f"sqlite+aiosqlite:///{base / 'a.db'}"
    dbs.migrate(url)
    svc = await build_services(Settings(database_url=url, key_dir=base / "keys", exports_dir=base / "exp"))
    key_row = await svc.identity.init()
    try:
        reg = await add_regulator(svc)
        await ledger_fill(svc.ledger, node, 40)
        first = await _export(svc, reg, base / "first")
        await ledger_fill(svc.ledger, node, 30, t0=1_700_086_400)
        second = await _export(svc, reg, base / "second")
        filtered = await _export(svc, reg, base / "filtered", region="CN-GZ")
        pub = base / "exchange.pub"
        pub.write_text(svc.identity.public_key.to_base64() + "\n")
    finally:
        await svc.close()
    # the same exchange (same key) with a rewritten history
    url2 = f"sqlite+aiosqlite:///{base / 'b.db'}"
    dbs.migrate(url2)
    svc2 = await build_services(Settings(database_url=url2, key_dir=base / "keys", exports_dir=base / "exp2"))
    async with svc2.sessions.begin() as session:  # the lying exchange reuses its key on a second database
        session.add(ExchangeKey(**{**dataclasses.asdict(key_row), "created_at": key_row.not_before}))
    try:
        reg2 = await add_regulator(svc2)
        await ledger_fill(svc2.ledger, node, 3)
        await ledger_fill(svc2.ledger, node, 67, seed=99)
        rewritten = await _export(svc2, reg2, base / "rewritten", since_sizes=[40])
    finally:
        await svc2.close()
    foreign_log = MemLog()
    fill(foreign_log, 20)
    foreign = base / "foreign"
    write_bundle(foreign_log, foreign)
    return Bundles(first, second, filtered, rewritten, foreign, (first / L.CHECKPOINT).read_text(), pub)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return dbs.run_async(_build(tmp_path_factory.mktemp("audit-real")))


def copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(src, dest)
    return dest


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def cli(*argv: str) -> int:
    return main(["audit", "verify", *argv])


# ---------------------------------------------------------------------------------------------------


def test_untouched_bundles_verify(bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    for b in (bundles.first, bundles.second, bundles.filtered):
        report = verify_bundle(b, trusted_keys=None)
        assert report.ok, [str(p) for p in report.problems]
    assert cli(str(bundles.second), "--trusted-key", str(bundles.exchange_pub)) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:") and "records 70" in out and "(matches --trusted-key)" in out


def test_second_export_verifies_since_the_first(bundles: Bundles, tmp_path: Path) -> None:
    since = tmp_path / "first.checkpoint"
    since.write_text(bundles.first_checkpoint)
    assert cli(str(bundles.second), "--since", str(since), "--trusted-key", str(bundles.exchange_pub)) == 0
    report = verify_bundle(bundles.second, since_checkpoint=bundles.first_checkpoint)
    assert report.consistency == {"since_size": 40, "size": 70, "status": "verified"}


def test_rewritten_log_is_detected_by_consistency(
    bundles: Bundles, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # on its own the rewritten bundle is self-consistent: only the earlier checkpoint exposes it
    assert verify_bundle(bundles.rewritten).ok
    report = verify_bundle(bundles.rewritten, since_checkpoint=bundles.first_checkpoint)
    assert report.codes() == {"consistency_failed"}
    assert "rewritten" in report.problems[0].message
    since = tmp_path / "first.checkpoint"
    since.write_text(bundles.first_checkpoint)
    assert cli(str(bundles.rewritten), "--since", str(since)) == 1
    assert "consistency_failed" in capsys.readouterr().out


def test_missing_consistency_proof_is_reported_not_assumed(bundles: Bundles) -> None:
    report = verify_bundle(bundles.filtered, since_checkpoint=verify_cp_of(bundles.foreign))
    assert "since_checkpoint_invalid" in report.codes()  # another log's checkpoint does not verify
    older = bundles.first_checkpoint
    report = verify_bundle(bundles.first, since_checkpoint=older)
    assert report.ok and report.consistency is not None and report.consistency["status"] == "verified"


def verify_cp_of(bundle: Path) -> str:
    return (bundle / L.CHECKPOINT).read_text()


# --- tampering ----------------------------------------------------------------------------------


def flip_record_byte(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    line = rec[4]
    at = line.index(b'"payload":"') + len(b'"payload":"') + 20
    new = b"B" if line[at : at + 1] != b"B" else b"C"
    rec[4] = line[:at] + new + line[at + 1 :]
    (b / L.RECORDS).write_bytes(b"".join(rec))


def drop_record(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    del rec[2]
    (b / L.RECORDS).write_bytes(b"".join(rec))


def reorder_records(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    rec[5], rec[6] = rec[6], rec[5]
    (b / L.RECORDS).write_bytes(b"".join(rec))


def edit_manifest_total(b: Path, extra: Bundles) -> None:
    m = json.loads((b / L.MANIFEST).read_bytes())
    m["totals"]["settled"]["fen"] += 1
    (b / L.MANIFEST).write_bytes(canonical_bytes(m))


def swap_in_foreign_record(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    foreign = lines(extra.foreign / L.RECORDS)
    index = L.parse_record_line(rec[7])[0]
    raw = L.parse_record_line(foreign[7])[1]
    rec[7] = L.record_line(index, raw)
    (b / L.RECORDS).write_bytes(b"".join(rec))


def swap_in_other_export_record(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    other = lines(extra.filtered / L.RECORDS)
    donor = next(x for x in other if L.parse_record_line(x)[0] != L.parse_record_line(rec[9])[0])
    rec[9] = donor
    (b / L.RECORDS).write_bytes(b"".join(rec))


def truncate_proofs(b: Path, extra: Bundles) -> None:
    prf = lines(b / L.PROOFS)
    (b / L.PROOFS).write_bytes(b"".join(prf[:-5]))


def resign_record_with_unknown_key(b: Path, extra: Bundles) -> None:
    rec = lines(b / L.RECORDS)
    index, _raw, env = L.parse_record_line(rec[3])
    mallory = SigningKey.generate()
    payload = base64.b64decode(env["payload"])
    forged = sign_envelope(env["payloadType"], payload, [(key_id_hex("mallory", mallory.public), mallory)])
    rec[3] = L.record_line(index, canonical_bytes(forged))
    (b / L.RECORDS).write_bytes(b"".join(rec))


def resign_manifest_with_unknown_key(b: Path, extra: Bundles) -> None:
    m = json.loads((b / L.MANIFEST).read_bytes())
    m["totals"]["settled"]["fen"] += 100
    data = canonical_bytes(m)
    mallory = SigningKey.generate()
    env = sign_envelope(L.MANIFEST_PAYLOAD_TYPE, data, [(m["exchange"]["key_id"], mallory)])
    (b / L.MANIFEST).write_bytes(data)
    (b / L.MANIFEST_SIG).write_bytes(canonical_bytes(env))


Tamper = Callable[[Path, Bundles], None]

CASES: list[tuple[str, Tamper, set[str], int | None]] = [
    # (name, tamper, codes that must be reported, records.jsonl line that must be named)
    (
        "flip one byte in a record",
        flip_record_byte,
        {"record_signature_invalid", "inclusion_proof_invalid", "file_hash_mismatch"},
        5,
    ),
    ("drop a record", drop_record, {"proof_misaligned", "count_mismatch", "file_hash_mismatch"}, 3),
    ("reorder two records", reorder_records, {"record_out_of_order", "proof_misaligned", "file_hash_mismatch"}, 7),
    ("edit a total in the manifest", edit_manifest_total, {"manifest_signature_mismatch", "totals_mismatch"}, None),
    (
        "swap in another exchange's record",
        swap_in_foreign_record,
        {"record_signed_by_unknown_key", "inclusion_proof_invalid", "file_hash_mismatch"},
        8,
    ),
    (
        "swap in a record from another export",
        swap_in_other_export_record,
        {"proof_misaligned", "file_hash_mismatch"},
        10,
    ),
    ("truncate proofs", truncate_proofs, {"proof_missing", "count_mismatch", "file_hash_mismatch"}, 66),
    (
        "re-sign a record with an unknown key",
        resign_record_with_unknown_key,
        {"record_signed_by_unknown_key", "inclusion_proof_invalid"},
        4,
    ),
    (
        "re-sign the manifest with an unknown key",
        resign_manifest_with_unknown_key,
        {"manifest_signature_invalid", "totals_mismatch"},
        None,
    ),
]


@pytest.mark.parametrize(("name", "tamper", "codes", "line"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_detected_and_named(
    bundles: Bundles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    tamper: Tamper,
    codes: set[str],
    line: int | None,
) -> None:
    b = copy(bundles.second, tmp_path)
    tamper(b, bundles)
    report = verify_bundle(b)
    assert not report.ok, name
    assert codes <= report.codes(), (name, [str(p) for p in report.problems])
    if line is not None:
        assert any(p.line == line for p in report.problems if p.file in (L.RECORDS, L.PROOFS)), (
            name,
            [str(p) for p in report.problems],
        )
    assert cli(str(b), "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and codes <= {p["code"] for p in out["problems"]}


def test_pinned_key_refuses_a_bundle_resigned_by_someone_else(bundles: Bundles, tmp_path: Path) -> None:
    """Mallory rewrites keys/ and the manifest with her own key: only --trusted-key can tell."""
    b = copy(bundles.second, tmp_path)
    m = json.loads((b / L.MANIFEST).read_bytes())
    mallory = SigningKey.generate()
    origin = m["exchange"]["origin"]
    kid = key_id_hex(origin, mallory.public)
    for f in (b / L.KEYS_DIR).iterdir():
        obj = json.loads(f.read_bytes())
        if obj["role"] == "exchange":
            f.unlink()
    entry = {
        "key_id": kid,
        "name": origin,
        "public_key": mallory.public.to_base64(),
        "role": "exchange",
        "owner": None,
        "not_before": None,
        "not_after": None,
    }
    (b / L.key_file_name(kid)).write_bytes(canonical_bytes(entry))
    m["exchange"].update(key_id=kid, public_key=mallory.public.to_base64(), key_ids=[kid])
    m["files"] = {n: v for n, v in m["files"].items() if not n.startswith("keys/")}
    import hashlib

    m["files"][L.key_file_name(kid)] = {
        "sha256": hashlib.sha256((b / L.key_file_name(kid)).read_bytes()).hexdigest(),
        "bytes": (b / L.key_file_name(kid)).stat().st_size,
    }
    data = canonical_bytes(m)
    (b / L.MANIFEST).write_bytes(data)
    (b / L.MANIFEST_SIG).write_bytes(canonical_bytes(sign_envelope(L.MANIFEST_PAYLOAD_TYPE, data, [(kid, mallory)])))
    unpinned = verify_bundle(b)
    # the records and checkpoint are still the exchange's, so even unpinned the swap shows ...
    assert {"checkpoint_signature_invalid", "record_signed_by_unknown_key"} <= unpinned.codes()
    pinned = verify_bundle(b, trusted_keys=[_pub(bundles)])
    assert {"manifest_untrusted_key", "trusted_key_absent"} <= pinned.codes()


def _pub(bundles: Bundles) -> Any:
    from federation.keys import load_public_key

    return load_public_key(bundles.exchange_pub)


def test_tar_archives_verify_and_bad_members_are_refused(bundles: Bundles, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundles.first, arcname="export")
    assert verify_bundle(archive).ok
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(bundles.first, arcname="export")
        info = tarfile.TarInfo("export/../../escape")
        info.size = 0
        tar.addfile(info)
    report = verify_bundle(evil)
    assert "archive_member_refused" in report.codes()
    assert not (tmp_path.parent / "escape").exists()


def test_usage_errors_exit_2(tmp_path: Path, bundles: Bundles) -> None:
    assert cli(str(tmp_path / "nope")) == 2
    assert cli(str(bundles.first), "--trusted-key", str(tmp_path / "nokey")) == 2
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    assert cli(str(bundles.first), "--trusted-key", str(bad)) == 2
