"""Issue 10, bugs 2-9 (verifier half): the offline verifier treats a bundle as hostile input. One test per bug."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from exchange.audit import layout as L
from exchange.audit.limits import Limits
from exchange.audit.verify import verify_bundle
from exchange.cli.main import main
from federation.canonical import canonical_bytes
from federation.dsse import record_payload_type, sign_envelope
from federation.keys import SigningKey
from tests.exchange.auditkit import MemLog, fill, reseal, write_bundle


@pytest.fixture(scope="module")
def log() -> MemLog:
    log = MemLog()
    fill(log, 30)
    return log


@pytest.fixture
def bundle(log: MemLog, tmp_path: Path) -> Path:
    out = tmp_path / "b"
    write_bundle(log, out)
    return out


@pytest.fixture
def pub(log: MemLog, tmp_path: Path) -> Path:
    path = tmp_path / "exchange.pub"
    path.write_text(log.key.public.to_base64() + "\n")
    return path


def tar_of(bundle: Path, out: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] = (), gz: bool = True) -> Path:
    with tarfile.open(out, "w:gz" if gz else "w") as tar:
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"top/{path.relative_to(bundle).as_posix()}")
    return out


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_an_untouched_bundle_verifies_and_is_trusted_only_when_pinned(bundle: Path, pub: Path, log: MemLog) -> None:
    assert verify_bundle(bundle, trusted_keys=[log.key.public]).trusted
    assert main(["audit", "verify", str(bundle), "--trusted-key", str(pub)]) == 0


# --- bug 2: duplicate members ----------------------------------------------------------------------


def test_bug2_duplicate_member_with_forged_manifest_is_refused(
    bundle: Path, pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = json.loads((bundle / L.MANIFEST).read_bytes())
    m["totals"]["settled"]["fen"] *= 10
    archive = tar_of(bundle, tmp_path / "dup.tar.gz", [member("top/manifest.json", canonical_bytes(m))])
    report = verify_bundle(archive)
    assert "archive_member_duplicate" in report.codes() and not report.ok
    assert main(["audit", "verify", str(archive), "--trusted-key", str(pub)]) == 1
    capsys.readouterr()
    assert main(["audit", "show", str(archive), "--trusted-key", str(pub)]) == 1
    out = capsys.readouterr().out
    assert "NOT SHOWN" in out and str(m["totals"]["settled"]["fen"]) not in out and "yuan" not in out


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "chardev", "sparse", "escape", "absolute", "extra"])
def test_bug2_non_regular_linked_escaping_or_unexpected_members_are_refused(
    bundle: Path, tmp_path: Path, kind: str
) -> None:
    info = tarfile.TarInfo("top/checkpoint2")
    data: bytes | None = None
    if kind == "symlink":
        info = tarfile.TarInfo("top/records.jsonl")
        info.type, info.linkname = tarfile.SYMTYPE, "/dev/zero"
    elif kind == "hardlink":
        info = tarfile.TarInfo("top/records.jsonl")
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "fifo":
        info = tarfile.TarInfo("top/checkpoint")
        info.type = tarfile.FIFOTYPE
    elif kind == "chardev":
        info = tarfile.TarInfo("top/checkpoint")
        info.type = tarfile.CHRTYPE
    elif kind == "sparse":
        info = tarfile.TarInfo("top/records.jsonl")
        info.type = tarfile.GNUTYPE_SPARSE
    elif kind == "escape":
        info, data = member("top/../../escape", b"x")
    elif kind == "absolute":
        info, data = member("/tmp/escape", b"x")
    else:
        info, data = member("top/notes.txt", b"x")
    fmt_ok = kind != "sparse"
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT if not fmt_ok else tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
        for path in sorted(bundle.rglob("*")):
            tar.add(path, arcname=f"top/{path.relative_to(bundle).as_posix()}", recursive=False)
    report = verify_bundle(archive)
    assert not report.ok
    codes = report.codes()
    assert codes & {
        "archive_member_not_regular",
        "archive_member_refused",
        "archive_member_unexpected",
        "archive_unreadable",
    }, codes
    assert not (tmp_path.parent / "escape").exists()


# --- bug 3: unbounded input ----------------------------------------------------------------------


def test_bug3_gzip_bomb_member_is_refused_at_the_first_limit(bundle: Path, tmp_path: Path) -> None:
    """64 MiB of zeros as records.jsonl (a line with no end): refused after max_line_bytes, not spooled."""
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("records.jsonl")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert archive.stat().st_size < 1 << 20
    report = verify_bundle(archive)
    assert report.codes() == {"line_too_long"}


def test_archives_made_by_tar_with_a_dot_root_or_no_top_directory_verify(bundle: Path, tmp_path: Path) -> None:
    import subprocess

    for i, argv in enumerate((["-C", str(bundle), "."], ["-C", str(bundle), *sorted(os.listdir(bundle))])):
        archive = tmp_path / f"t{i}.tar.gz"
        subprocess.run(["tar", "-czf", str(archive), *argv], check=True)
        report = verify_bundle(archive)
        assert report.ok, [str(p) for p in report.problems]


def test_limit_flags_below_one_are_usage_errors(bundle: Path) -> None:
    assert main(["audit", "verify", str(bundle), "--max-line-bytes", "0"]) == 2


def test_bug3_declared_sizes_and_total_inflation_are_bounded(bundle: Path, tmp_path: Path) -> None:
    archive = tar_of(bundle, tmp_path / "b.tar.gz")
    assert verify_bundle(archive).ok
    small = Limits(max_small_file_bytes=100)
    assert "file_too_large" in verify_bundle(archive, limits=small).codes()
    assert "archive_too_large" in verify_bundle(archive, limits=Limits(max_inflated_bytes=10_000)).codes()
    huge = tmp_path / "hdr.tar"
    with tarfile.open(huge, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.pax_headers = {"comment": "x" * 200_000}
        tar.addfile(info, io.BytesIO(b""))
    assert verify_bundle(huge).codes() == {"archive_header_too_large"}


def test_bug3_long_line_and_record_count_limits(bundle: Path) -> None:
    with open(bundle / L.RECORDS, "ab") as f:
        f.write(b"x" * (3 << 20) + b"\n")
    report = verify_bundle(bundle)
    assert "line_too_long" in report.codes()
    assert "too_many_lines" in verify_bundle(bundle, limits=Limits(max_records=5)).codes()


@pytest.mark.timeout(20)
def test_bug3_directory_symlink_to_dev_zero_and_fifo_are_refused_without_hanging(bundle: Path) -> None:
    os.unlink(bundle / L.RECORDS)
    os.symlink("/dev/zero", bundle / L.RECORDS)
    os.unlink(bundle / L.CHECKPOINT)
    os.mkfifo(bundle / L.CHECKPOINT)
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(r=verify_bundle(bundle)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "the verifier blocked on a FIFO"
    problems = {(p.code, p.file) for p in result["r"].problems}
    assert ("file_not_regular", L.RECORDS) in problems and ("file_not_regular", L.CHECKPOINT) in problems


# --- bug 4: malformed fields --------------------------------------------------------------------


def _edit_manifest(bundle: Path, log: MemLog, fn: Any) -> None:
    reseal(bundle, log.key, edit=fn)


@pytest.mark.parametrize(
    ("what", "fn"),
    [
        ("filters.from as text", lambda m: m["filters"].update({"from": "yesterday"})),
        ("mixed-type key_ids", lambda m: m["exchange"].update(key_ids=[*m["exchange"]["key_ids"], 7])),
        ("totals as a list", lambda m: m.update(totals=[])),
        ("files entry a string", lambda m: m["files"].update({L.SUMMARY: "abc"})),
    ],
)
def test_bug4_malformed_manifest_fields_are_named_not_a_traceback(
    bundle: Path, log: MemLog, what: str, fn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_manifest(bundle, log, fn)
    report = verify_bundle(bundle)
    assert report.codes() == {"schema_invalid"}, what
    assert main(["audit", "verify", str(bundle)]) == 1
    assert "manifest.json: schema_invalid: $." in capsys.readouterr().out


@pytest.mark.parametrize(
    "entry", [{"x": "a string"}, {"family": "x", "domestic": True, "scu": "1e80"}, {"family": 1, "domestic": 1}]
)
def test_bug4_malformed_catalogue_entries_are_named(bundle: Path, log: MemLog, entry: Any) -> None:
    cat = json.loads((bundle / L.CATALOGUE).read_bytes())
    cat["models"]["NV-H100-SXM"] = entry if "family" in entry else "a string"
    (bundle / L.CATALOGUE).write_bytes(canonical_bytes(cat))
    reseal(bundle, log.key)
    assert ("schema_invalid", L.CATALOGUE) in {(p.code, p.file) for p in verify_bundle(bundle).problems}


def test_bug4_huge_decimal_figures_in_signed_records_do_not_crash(tmp_path: Path) -> None:
    log = MemLog()
    fill(log, 3)
    log.append("settlement", {"id": "s9", "at": 1_700_000_999, "buyer_debit_fen": 5, "scu_hours": "1e100"})
    log.append("settlement", {"id": "s10", "at": 1_700_001_000, "buyer_debit_fen": 5, "device_hours": "1e80"})
    write_bundle(log, tmp_path / "b")
    report = verify_bundle(tmp_path / "b", trusted_keys=[log.key.public])
    assert report.trusted, [str(p) for p in report.problems]


# --- bug 5: duplicate keys and canonical bytes ---------------------------------------------------


def test_bug5_duplicate_keys_in_a_signed_manifest_are_refused(bundle: Path, log: MemLog) -> None:
    data = (bundle / L.MANIFEST).read_bytes()
    m = json.loads(data)
    forged = dict(m["totals"])
    forged["settled"] = {**forged["settled"], "fen": forged["settled"]["fen"] * 10}
    dup = b'{"totals":' + canonical_bytes(forged) + b"," + data[1:]
    reseal(bundle, log.key, manifest_bytes=dup)
    report = verify_bundle(bundle, trusted_keys=[log.key.public])
    assert ("json_duplicate_key", L.MANIFEST) in {(p.code, p.file) for p in report.problems}
    reseal(bundle, log.key, manifest_bytes=data.replace(b",", b", ", 1))
    assert ("json_not_canonical", L.MANIFEST) in {(p.code, p.file) for p in verify_bundle(bundle).problems}


def test_bug5_duplicate_keys_in_envelopes_and_payloads_are_refused(bundle: Path, log: MemLog) -> None:
    lines = (bundle / L.RECORDS).read_bytes().splitlines(keepends=True)
    index, raw, env = L.parse_record_line(lines[0])
    other = sign_envelope(env["payloadType"], canonical_bytes({"id": "forged", "at": 1}), [(log.key_id, log.key)])
    lines[0] = L.record_line(index, b'{"payload":"' + other["payload"].encode() + b'",' + raw[1:])
    # a payload with a duplicate member, properly signed by the exchange
    payload = b'{"at":1700000060,"at":1700000061,"id":"x"}'
    env2 = sign_envelope(record_payload_type("usage"), payload, [(log.key_id, log.key)])
    i1 = L.parse_record_line(lines[1])[0]
    lines[1] = L.record_line(i1, canonical_bytes(env2))
    (bundle / L.RECORDS).write_bytes(b"".join(lines))
    reseal(bundle, log.key)
    problems = {(p.code, p.line) for p in verify_bundle(bundle).problems}
    assert ("record_json_duplicate_key", 1) in problems and ("payload_json_duplicate_key", 2) in problems


@pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"1e400", b"123456789012345678901234567890"])
def test_bug5_nan_and_out_of_range_numbers_are_named(bundle: Path, log: MemLog, text: bytes) -> None:
    data = (bundle / L.MANIFEST).read_bytes()
    m = json.loads(data)
    bad = data.replace(b'"created_at":%d' % m["created_at"], b'"created_at":' + text)
    reseal(bundle, log.key, manifest_bytes=bad)
    codes = verify_bundle(bundle).codes()
    assert codes & {"json_not_finite", "json_number_out_of_range"}, codes


# --- bug 6: OK without trust ---------------------------------------------------------------------


def test_bug6_unpinned_or_wrongly_pinned_is_never_ok(
    bundle: Path, pub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(bundle)]) == 3
    out = capsys.readouterr().out
    assert out.startswith("UNTRUSTED") and "OK" not in out
    wrong = tmp_path / "wrong.pub"
    wrong.write_text(SigningKey.generate().public.to_base64() + "\n")
    assert main(["audit", "verify", str(bundle), "--trusted-key", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "does NOT match --trusted-key" in out and "pinned with" not in out
    assert main(["audit", "verify", str(bundle), "--trusted-key", str(pub)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["audit", "show", str(bundle)]) == 3
    assert "UNTRUSTED" in capsys.readouterr().out


def test_bug6_bundle_resigned_end_to_end_by_an_unknown_key_is_untrusted(tmp_path: Path, log: MemLog) -> None:
    mallory = MemLog()
    fill(mallory, 30)
    write_bundle(mallory, tmp_path / "m")
    assert main(["audit", "verify", str(tmp_path / "m")]) == 3
    report = verify_bundle(tmp_path / "m", trusted_keys=[log.key.public])
    assert not report.trusted and "manifest_untrusted_key" in report.codes()


# --- bug 7: key validity and key ids ---------------------------------------------------------------


def _rewrite_key(bundle: Path, role: str, fn: Any) -> None:
    for f in (bundle / L.KEYS_DIR).iterdir():
        obj = json.loads(f.read_bytes())
        if obj["role"] == role:
            fn(obj)
            f.unlink()
            (bundle / L.key_file_name(obj["key_id"])).write_bytes(canonical_bytes(obj))


def test_bug7_key_id_is_rederived(bundle: Path, log: MemLog) -> None:
    _rewrite_key(bundle, "participant", lambda o: o.update(key_id="00000000"))
    reseal(
        bundle,
        log.key,
        edit=lambda m: m["exchange"].update(key_ids=sorted(p.stem for p in (bundle / "keys").iterdir())),
    )
    assert ("key_id_mismatch", "keys/00000000.json") in {(p.code, p.file) for p in verify_bundle(bundle).problems}


def test_bug7_manifest_and_checkpoint_keys_must_be_valid_at_export_time(bundle: Path, log: MemLog) -> None:
    _rewrite_key(bundle, "exchange", lambda o: o.update(not_before=1, not_after=1_000))  # retired long ago
    reseal(bundle, log.key)
    codes = verify_bundle(bundle, trusted_keys=[log.key.public]).codes()
    assert "manifest_key_not_valid" in codes
    _rewrite_key(bundle, "exchange", lambda o: o.update(not_before=2_000_000_000, not_after=None))  # not yet made
    reseal(bundle, log.key)
    codes = verify_bundle(bundle, trusted_keys=[log.key.public]).codes()
    assert {"manifest_key_not_valid", "checkpoint_key_not_valid"} <= codes


def test_bug7_an_export_signed_after_a_rotation_that_followed_its_request_verifies(tmp_path: Path) -> None:
    """created_at (the request) precedes the new key; signed_at (when the job signed) does not."""
    from exchange.audit.writer import BundleKeyInfo, BundleWriter
    from tests.exchange.auditkit import CATALOGUE

    log = MemLog()
    fill(log, 6)
    keys = [
        BundleKeyInfo(log.key_id, log.origin, log.key.public.to_base64(), "exchange", None, 1_700_000_500, None),
        *log.keys()[1:],
    ]
    w = BundleWriter(
        tmp_path / "b",
        export_id="e",
        created_at=1_700_000_000,
        authority="HX",
        origin=log.origin,
        filters={},
        checkpoint_note=log.checkpoint(),
        keys=keys,
        catalogue=CATALOGUE,
    )
    for i, e in enumerate(log.entries):
        w.feed(i, e)
    w.finish(log.key, signed_at=1_700_000_600)
    report = verify_bundle(tmp_path / "b", trusted_keys=[log.key.public])
    assert report.trusted, [str(p) for p in report.problems]


# --- bug 8: a lying exchange that signs what it writes -----------------------------------------------


def _settlement(sid: str, start: int, fen: int, supersedes: str | None = None, prior: Any = None) -> dict[str, Any]:
    detail: dict[str, Any] = {} if prior is None else {"superseded": prior}
    return {
        "settlement_id": sid,
        "contract_id": "c0",
        "period_start": start,
        "period_end": start + 3600,
        "buyer_debit_fen": fen,
        "provider_credit_fen": fen - 1,
        "fee_fen": 1,
        "device_minutes": 60,
        "detail": detail,
        "supersedes_id": supersedes,
        "created_at": 1_700_000_000 + start,
    }


def _figures(fen: int) -> dict[str, int]:
    return {"buyer_debit_fen": fen, "provider_credit_fen": fen - 1, "fee_fen": 1, "device_minutes": 60}


@pytest.mark.parametrize(
    ("name", "records", "code"),
    [
        ("honest", [_settlement("s1", 0, 100), _settlement("s2", 0, 90, "s1", _figures(100))], None),
        (
            "second settlement of a period",
            [_settlement("s1", 0, 100), _settlement("s2", 0, 100)],
            "settlement_period_twice",
        ),
        (
            "correction that does not net",
            [_settlement("s1", 0, 100), _settlement("s2", 0, 90, "s1", _figures(10))],
            "correction_not_netting",
        ),
        (
            "correction of a settlement not in the log",
            [_settlement("s2", 0, 90, "s0", _figures(100))],
            "correction_reference_missing",
        ),
        (
            "correction of a superseded settlement",
            [
                _settlement("s1", 0, 100),
                _settlement("s2", 0, 90, "s1", _figures(100)),
                _settlement("s3", 0, 80, "s1", _figures(100)),
            ],
            "correction_reference_invalid",
        ),
        ("same record logged twice", [_settlement("s1", 0, 100), _settlement("s1", 0, 100)], "entry_duplicated"),
    ],
)
def test_bug8_economic_invariants(tmp_path: Path, name: str, records: list[dict[str, Any]], code: str | None) -> None:
    log = MemLog()
    for body in records:
        log.append("settlement", body)
    write_bundle(log, tmp_path / "b")
    report = verify_bundle(tmp_path / "b", trusted_keys=[log.key.public])
    if code is None:
        assert report.trusted, [str(p) for p in report.problems]
    else:
        assert code in report.codes(), (name, [str(p) for p in report.problems])


def test_bug8_a_file_listed_twice_in_the_manifest_is_refused(bundle: Path, log: MemLog) -> None:
    data = (bundle / L.MANIFEST).read_bytes()
    at = data.index(b'"files":{') + len(b'"files":{')
    entry = b'"summary.csv":{"bytes":1,"sha256":"' + b"0" * 64 + b'"},'
    reseal(bundle, log.key, manifest_bytes=data[:at] + entry + data[at:])
    assert "json_duplicate_key" in verify_bundle(bundle).codes()


# --- bug 9: node keys in the bundle ------------------------------------------------------------------


def test_bug9_usage_records_need_a_node_signature_by_a_key_in_the_bundle(bundle: Path, log: MemLog) -> None:
    assert (bundle / L.key_file_name(log.node_kid)).exists()
    lines = (bundle / L.RECORDS).read_bytes().splitlines(keepends=True)
    n = next(i for i, x in enumerate(lines) if b"vnd.hetex.usage" in x)
    index, _raw, env = L.parse_record_line(lines[n])
    # the exchange replaces the node's signature with its own
    forged = sign_envelope(env["payloadType"], base64.b64decode(env["payload"]), [(log.key_id, log.key)])
    lines[n] = L.record_line(index, canonical_bytes(forged))
    (bundle / L.RECORDS).write_bytes(b"".join(lines))
    reseal(bundle, log.key)
    problems = {(p.code, p.line) for p in verify_bundle(bundle).problems}
    assert ("usage_node_signature_missing", n + 1) in problems


def test_every_problem_is_one_line_even_with_hostile_names(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tar_of(bundle, tmp_path / "nl.tar", [member("top/x\nOK: forged\x1b[2K", b"x")], gz=False)
    assert main(["audit", "verify", str(archive)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAILED") and not any(line.startswith("OK") for line in out)
    assert out[1].startswith("  - bundle: archive_member_unexpected:") and "\\n" in out[1] and "\\x1b" in out[1]
