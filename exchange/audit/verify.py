"""Standalone verifier of regulator audit bundles: no database, no network, only the bundle's bytes.

Dependencies, kept small on purpose so a regulator can read all of it: the Python standard library,
`cryptography` and `rfc8785` (through federation.keys/canonical/dsse/note/merkle) and the two pure
bundle modules exchange.audit.facts and exchange.audit.layout. tests/exchange/test_audit_imports.py
enforces this. The algorithm is written down in specs/audit-verifier.md; every problem found is
reported (file, line, log index, what is wrong), not only the first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from exchange.audit import facts as F
from exchange.audit import layout as L
from federation.dsse import pae, verify_envelope
from federation.errors import EnvelopeError, KeyFormatError, NoteError, ProofError
from federation.keys import Keyring, VerifyKey, key_id_hex
from federation.merkle import leaf_hash, verify_consistency, verify_inclusion
from federation.note import Checkpoint, NoteVerifier, parse_checkpoint, verify_note

MAX_PROBLEMS = 10_000
MAX_MEMBER_BYTES = 64 << 30
_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle: a stable code, where (file, 1-based line, log index) and what."""

    code: str
    message: str
    file: str | None = None
    line: int | None = None
    log_index: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (None members omitted)."""
        return {k: v for k, v in vars(self).items() if v is not None}

    def __str__(self) -> str:
        where = self.file or "bundle"
        if self.line is not None:
            where += f" line {self.line}"
        if self.log_index is not None:
            where += f" (log index {self.log_index})"
        return f"{where}: {self.code}: {self.message}"


@dataclass
class VerifyReport:
    """Outcome of verify_bundle: ok when there is no problem; what was checked and recomputed."""

    bundle: str
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    records: int = 0
    signatures_checked: int = 0
    proofs_checked: int = 0
    checkpoint: dict[str, Any] | None = None
    exchange_key_id: str | None = None
    trusted_key_pinned: bool = False
    consistency: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    totals: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems and not self.problems_omitted

    @property
    def records_per_second(self) -> float:
        """Verification throughput."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def add(self, code: str, message: str, **where: Any) -> None:
        """Record a problem (bounded: beyond MAX_PROBLEMS only a count is kept)."""
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems_omitted += 1
            return
        self.problems.append(Problem(code, message, **where))

    def codes(self) -> set[str]:
        """The distinct problem codes (handy in tests and scripts)."""
        return {p.code for p in self.problems}

    def to_json(self) -> dict[str, Any]:
        """Machine-readable report."""
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "records": self.records,
            "signatures_checked": self.signatures_checked,
            "proofs_checked": self.proofs_checked,
            "checkpoint": self.checkpoint,
            "exchange_key_id": self.exchange_key_id,
            "trusted_key_pinned": self.trusted_key_pinned,
            "consistency": self.consistency,
            "filters": self.filters,
            "totals": self.totals,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "problems": [p.to_json() for p in self.problems],
            "problems_omitted": self.problems_omitted,
        }


@dataclass(frozen=True)
class BundleKey:
    """One keys/ entry: a public key, its id and role, and when it may sign (epoch seconds)."""

    key_id: str
    name: str
    key: VerifyKey
    role: str
    owner: str | None
    not_before: int | None
    not_after: int | None


# ---------------------------------------------------------------------------------------------------
# entry point


def verify_bundle(
    path: str | os.PathLike[str],
    trusted_keys: Sequence[VerifyKey] | None = None,
    since_checkpoint: str | None = None,
) -> VerifyReport:
    """Verify a bundle (directory, .tar or .tar.gz) and return a report naming every problem found.

    `trusted_keys`: the exchange key(s) the regulator obtained out of band; the manifest and the
    checkpoint must be signed by one of them. `since_checkpoint`: an earlier signed checkpoint note of
    the same log; the bundle must prove its own checkpoint extends it.
    """
    started = time.perf_counter()
    root = Path(path)
    report = VerifyReport(bundle=str(root), trusted_key_pinned=bool(trusted_keys))
    if root.is_dir():
        _verify_dir(root, report, list(trusted_keys or ()), since_checkpoint)
    elif root.is_file():
        with tempfile.TemporaryDirectory(prefix="hetex-verify-") as tmp:
            if _extract(root, Path(tmp), report):
                _verify_dir(Path(tmp), report, list(trusted_keys or ()), since_checkpoint)
    else:
        report.add("bundle_missing", f"{root} is neither a directory nor a file")
    report.seconds = time.perf_counter() - started
    return report


def _extract(archive: Path, dest: Path, report: VerifyReport) -> bool:
    """Unpack a tar(.gz) holding one bundle (optionally under one top-level directory), refusing (and naming)
    anything but regular files with plain names; False only when the archive cannot be read at all."""
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError) as exc:
        report.add("archive_unreadable", f"cannot open {archive.name} as a tar archive: {exc}")
        return False
    with tar:
        try:
            members = [m for m in tar.getmembers() if not m.isdir()]
            tops = {m.name.lstrip("./").split("/", 1)[0] for m in members}
            strip = len(tops) == 1 and all("/" in m.name.lstrip("./") for m in members) and tops != {L.KEYS_DIR}
            for member in members:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if strip:
                    parts = parts[1:]
                name = "/".join(parts)
                if (
                    not member.isfile()
                    or not all(_SAFE_NAME.match(p) for p in parts)
                    or not 1 <= len(parts) <= 2
                    or (len(parts) == 2 and parts[0] != L.KEYS_DIR)
                ):
                    report.add("archive_member_refused", f"archive member {member.name!r} is not a bundle file")
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    report.add("archive_member_refused", f"archive member {member.name!r} is too large")
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
        except (tarfile.TarError, OSError, EOFError) as exc:
            report.add("archive_unreadable", f"archive is damaged: {exc}")
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# the checks


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] when it is a JSON object, else {} (a malformed manifest is reported, not fatal)."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    """parent[key] when it is a JSON array, else []."""
    value = parent.get(key)
    return value if isinstance(value, list) else []


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _bundle_files(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            out.add((Path(dirpath) / name).relative_to(root).as_posix())
    return out


def _load_keys(root: Path, report: VerifyReport) -> dict[str, BundleKey]:
    keys: dict[str, BundleKey] = {}
    kdir = root / L.KEYS_DIR
    if not kdir.is_dir():
        report.add("keys_missing", "the bundle has no keys/ directory", file=L.KEYS_DIR)
        return keys
    for path in sorted(kdir.iterdir()):
        rel = f"{L.KEYS_DIR}/{path.name}"
        try:
            obj = json.loads(path.read_bytes())
            kid, name, role = obj["key_id"], obj["name"], obj["role"]
            key = VerifyKey.from_base64(obj["public_key"])
            nb, na = obj.get("not_before"), obj.get("not_after")
            if not all(isinstance(v, str) for v in (kid, name, role)) or role not in L.KEY_ROLES:
                raise ValueError("key_id, name and role must be strings; role one of " + ", ".join(sorted(L.KEY_ROLES)))
            if any(v is not None and (not isinstance(v, int) or isinstance(v, bool)) for v in (nb, na)):
                raise ValueError("not_before and not_after must be integers or null")
        except (ValueError, KeyError, TypeError, KeyFormatError) as exc:
            report.add("key_malformed", f"cannot read the key: {exc}", file=rel)
            continue
        if path.name != f"{kid}.json":
            report.add("key_malformed", f"key file name does not match key id {kid}", file=rel)
        if kid in keys and keys[kid].key != key:
            report.add("key_conflict", f"key id {kid} is listed twice with different keys", file=rel)
            continue
        keys[kid] = BundleKey(kid, name, key, role, obj.get("owner"), nb, na)
    return keys


def _verify_manifest_sig(
    root: Path,
    manifest_bytes: bytes,
    manifest: dict[str, Any],
    keys: dict[str, BundleKey],
    trusted: list[VerifyKey],
    report: VerifyReport,
) -> None:
    try:
        env = json.loads((root / L.MANIFEST_SIG).read_bytes())
    except FileNotFoundError:
        report.add("manifest_unsigned", "manifest.sig is missing", file=L.MANIFEST_SIG)
        return
    except ValueError:
        report.add("manifest_signature_malformed", "manifest.sig is not JSON", file=L.MANIFEST_SIG)
        return
    exch = _obj(manifest, "exchange")
    kid = exch.get("key_id")
    report.exchange_key_id = kid if isinstance(kid, str) else None
    if trusted:
        try:
            ptype = env["payloadType"]
            payload = base64.b64decode(env["payload"], validate=True)
            sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
        except (KeyError, TypeError, ValueError):
            report.add("manifest_signature_malformed", "manifest.sig is not a DSSE envelope", file=L.MANIFEST_SIG)
            return
        if ptype != L.MANIFEST_PAYLOAD_TYPE:
            report.add("manifest_signature_malformed", f"payload type {ptype!r}", file=L.MANIFEST_SIG)
            return
        message = pae(ptype, payload)
        if not any(k.is_valid(s, message) for k in trusted for s in sigs):
            report.add(
                "manifest_untrusted_key",
                "manifest.sig is not signed by the trusted exchange key (--trusted-key)",
                file=L.MANIFEST_SIG,
            )
            return
        ek = exch.get("public_key")
        if not any(k.to_base64() == ek for k in trusted):
            report.add(
                "manifest_untrusted_key",
                "the manifest names an exchange key other than the trusted one",
                file=L.MANIFEST,
            )
    else:
        entry = keys.get(kid) if isinstance(kid, str) else None
        if entry is None or entry.role != "exchange":
            report.add(
                "manifest_key_unknown",
                f"the manifest's exchange key {kid} is not an exchange key in keys/",
                file=L.MANIFEST,
            )
            return
        ring = Keyring()
        ring.add(entry.key_id, entry.key, name=entry.name)
        try:
            payload = verify_envelope(env, ring, payload_type=L.MANIFEST_PAYLOAD_TYPE)
        except EnvelopeError as exc:
            code = "manifest_signed_by_unknown_key" if exc.reason == "unknown_key" else "manifest_signature_invalid"
            report.add(code, f"manifest.sig: {exc.message}", file=L.MANIFEST_SIG)
            return
    if not hmac.compare_digest(payload, manifest_bytes):
        report.add(
            "manifest_signature_mismatch", "manifest.sig signs other bytes than manifest.json", file=L.MANIFEST_SIG
        )


def _note_verifiers(keys: dict[str, BundleKey], trusted: list[VerifyKey], origin: str | None) -> list[NoteVerifier]:
    if trusted:
        names = {k.name for k in keys.values() if k.role == "exchange"} | ({origin} if origin else set())
        return [NoteVerifier(n, t) for n in sorted(names) for t in trusted]
    return [NoteVerifier(k.name, k.key) for k in keys.values() if k.role == "exchange"]


def _read_checkpoint(
    root: Path, verifiers: list[NoteVerifier], manifest: dict[str, Any], report: VerifyReport
) -> Checkpoint | None:
    try:
        note = (root / L.CHECKPOINT).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        report.add("checkpoint_missing", "the bundle has no readable checkpoint", file=L.CHECKPOINT)
        return None
    try:
        cp = parse_checkpoint(verify_note(note, verifiers))
    except NoteError as exc:
        report.add("checkpoint_signature_invalid", f"checkpoint: {exc.message}", file=L.CHECKPOINT)
        try:
            cp = parse_checkpoint(note[: note.rfind("\n\n") + 1])
        except NoteError:
            return None
    report.checkpoint = {"origin": cp.origin, "size": cp.size, "root": base64.b64encode(cp.root).decode()}
    exch = _obj(manifest, "exchange")
    if exch.get("origin") != cp.origin:
        report.add("checkpoint_mismatch", f"checkpoint origin {cp.origin!r} is not the manifest's", file=L.CHECKPOINT)
    mcp = _obj(manifest, "checkpoint")
    if mcp.get("size") != cp.size or mcp.get("root") != report.checkpoint["root"]:
        report.add("checkpoint_mismatch", "the manifest names another checkpoint than the bundle's", file=L.MANIFEST)
    return cp


def _lines(path: Path, hasher: Any) -> Iterator[bytes]:
    try:
        f: BinaryIO = open(path, "rb")  # noqa: SIM115 - generator closes it
    except OSError:
        return
    with f:
        for line in f:
            hasher.update(line)
            yield line


def _verify_records(
    root: Path,
    manifest: dict[str, Any],
    keys: dict[str, BundleKey],
    cp: Checkpoint | None,
    catalogue: dict[str, Any],
    report: VerifyReport,
) -> tuple[F.Totals, dict[str, str]]:
    """Stream records.jsonl and proofs.jsonl side by side: order, signature, filters, inclusion, totals."""
    filters = _obj(manifest, "filters")
    report.filters = filters
    scope = _obj(manifest, "scope")
    complete = all(filters.get(k) is None for k in F.FILTER_KEYS)
    # A record's time is its business time (a usage period may end before the key that signs it was
    # made), so only the end of a key's validity is enforced: no record may claim a time after it.
    ring = Keyring()
    for k in keys.values():
        ring.add(k.key_id, k.key, name=k.name, owner=k.owner, not_after=k.not_after)
    totals = F.Totals()
    contracts: dict[str, F.RecordFacts] = {}  # facts of contract records seen so far (section 3 of the spec)
    hashes = {L.RECORDS: hashlib.sha256(), L.PROOFS: hashlib.sha256()}
    records = _lines(root / L.RECORDS, hashes[L.RECORDS])
    proofs = _lines(root / L.PROOFS, hashes[L.PROOFS])
    if not (root / L.RECORDS).is_file():
        report.add("file_missing", "records.jsonl is missing", file=L.RECORDS)
    prev: int | None = None
    line_no = 0
    n_proofs = 0
    while True:
        rec = next(records, None)
        prf = next(proofs, None)
        if rec is None and prf is None:
            break
        line_no += 1
        if prf is not None:
            n_proofs += 1
        if rec is None:
            report.add("proof_without_record", "a proof line has no record line", file=L.PROOFS, line=line_no)
            continue
        report.records += 1
        try:
            index, raw, entry = L.parse_record_line(rec)
        except L.LineError as exc:
            report.add("record_malformed", str(exc), file=L.RECORDS, line=line_no)
            continue
        where = {"file": L.RECORDS, "line": line_no, "log_index": index}
        if prev is not None and index <= prev:
            report.add(
                "record_out_of_order",
                f"log index {index} does not follow {prev} (records reordered or duplicated)",
                **where,
            )
        elif complete and index != (prev + 1 if prev is not None else scope.get("from_index", 0)):
            report.add(
                "record_missing",
                f"unfiltered export skips log indices {(prev + 1) if prev is not None else 0}..{index - 1}",
                **where,
            )
        prev = index if prev is None else max(prev, index)
        if cp is not None and index >= cp.size:
            report.add("record_beyond_checkpoint", f"log index {index} is not in the tree of size {cp.size}", **where)
        # signature (facts first: the record's own time selects which keys were valid)
        facts: F.RecordFacts | None = None
        try:
            kind, _payload, obj = F.decode_payload(entry)
            facts = F.record_facts(kind, obj, catalogue, contracts)
            cid = F.contract_key(kind, obj)
            if cid is not None:
                contracts[cid] = facts
        except F.FactsError as exc:
            report.add("record_malformed", str(exc), **where)
        _check_signature(entry, ring, facts.at if facts is not None else None, report, where)
        if facts is not None:
            for why in F.filter_violations(facts, filters):
                report.add("filter_not_honoured", why, **where)
            totals.add(facts)
        # inclusion proof
        if prf is None:
            report.add("proof_missing", "no inclusion proof for this record (proofs.jsonl is short)", **where)
        elif cp is not None:
            _check_proof(prf, index, raw, cp, report, where)
    if not complete and scope:
        lo, hi = scope.get("from_index"), scope.get("to_index")
        if isinstance(lo, int) and isinstance(hi, int) and prev is not None and not lo <= prev < hi:
            report.add(
                "record_outside_scope", f"log index {prev} is outside the scanned range [{lo}, {hi})", file=L.RECORDS
            )
    counts = _obj(manifest, "counts")
    if counts.get("records") != report.records:
        report.add(
            "count_mismatch",
            f"manifest counts {counts.get('records')} records, records.jsonl has {report.records}",
            file=L.RECORDS,
        )
    if counts.get("proofs") != n_proofs:
        report.add(
            "count_mismatch",
            f"manifest counts {counts.get('proofs')} proofs, proofs.jsonl has {n_proofs}",
            file=L.PROOFS,
        )
    return totals, {name: h.hexdigest() for name, h in hashes.items()}


def _check_signature(
    entry: dict[str, Any], ring: Keyring, at: int | None, report: VerifyReport, where: dict[str, Any]
) -> None:
    report.signatures_checked += 1
    try:
        verify_envelope(entry, ring, at=at)
        return
    except EnvelopeError as exc:
        reason, message = exc.reason, exc.message
    sigs = _list(entry, "signatures")
    kids = [s.get("keyid") for s in sigs if isinstance(s, dict)]
    if reason == "unknown_key":
        expired = [k for k in kids if isinstance(k, str) and ring.entry(k) is not None]
        if expired:
            report.add("record_key_not_valid", f"key {expired[0]} was retired before the record's time {at}", **where)
        else:
            report.add("record_signed_by_unknown_key", f"no signature by a key in keys/ (key ids {kids})", **where)
    elif reason == "bad_signature":
        report.add("record_signature_invalid", "the record's signature does not verify (record altered)", **where)
    else:
        report.add("record_malformed", f"envelope: {message}", **where)


def _check_proof(
    line: bytes, index: int, raw: bytes, cp: Checkpoint, report: VerifyReport, where: dict[str, Any]
) -> None:
    try:
        p_index, hashes = L.parse_proof_line(line)
    except L.LineError as exc:
        report.add("proof_malformed", str(exc), **{**where, "file": L.PROOFS})
        return
    if p_index != index:
        report.add(
            "proof_misaligned",
            f"proof line is for log index {p_index}, the record is {index}",
            **{**where, "file": L.PROOFS},
        )
        return
    report.proofs_checked += 1
    try:
        verify_inclusion(leaf_hash(raw), index, cp.size, hashes, cp.root)
    except ProofError as exc:
        report.add(
            "inclusion_proof_invalid",
            f"record not proven in the checkpoint: {exc.message}",
            **{**where, "file": L.PROOFS},
        )


def _check_files(root: Path, manifest: dict[str, Any], streamed: dict[str, str], report: VerifyReport) -> None:
    listed = _obj(manifest, "files")
    present = _bundle_files(root) - {L.MANIFEST, L.MANIFEST_SIG}
    for name in sorted(present - set(listed)):
        report.add("file_unlisted", "file is not listed (and so not signed) in the manifest", file=name)
    for name in sorted(listed):
        info = listed[name]
        want = info.get("sha256") if isinstance(info, dict) else None
        if name not in present:
            report.add("file_missing", "listed in the manifest but missing from the bundle", file=name)
            continue
        got = streamed.get(name) or _sha256_file(root / name)
        if got != want:
            report.add("file_hash_mismatch", f"sha256 {got} is not the manifest's {want}", file=name)
    for name in (L.RECORDS, L.PROOFS, L.CHECKPOINT, L.CATALOGUE, L.SUMMARY):
        if name not in listed and name in present:
            continue
        if name not in listed:
            report.add("file_missing", "a required bundle file is not in the manifest", file=name)


def _check_consistency(
    root: Path, cp: Checkpoint, since: str, verifiers: list[NoteVerifier], report: VerifyReport
) -> None:
    try:
        old = parse_checkpoint(verify_note(since, verifiers))
    except NoteError as exc:
        report.consistency = {"status": "failed"}
        report.add("since_checkpoint_invalid", f"the earlier checkpoint does not verify: {exc.message}")
        return
    report.consistency = {"since_size": old.size, "size": cp.size, "status": "failed"}
    if old.origin != cp.origin:
        report.add("consistency_failed", f"the earlier checkpoint is of log {old.origin!r}, not {cp.origin!r}")
        return
    if old.size > cp.size:
        report.add("consistency_failed", f"the earlier checkpoint (size {old.size}) is larger than the bundle's")
        return
    proof: list[bytes] | None = [] if old.size == cp.size else None
    path = root / L.CONSISTENCY
    if proof is None and path.is_file():
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    item = L.parse_consistency_line(line)
                except L.LineError as exc:
                    report.add("consistency_malformed", str(exc), file=L.CONSISTENCY, line=n)
                    continue
                if item.size1 == old.size and item.size2 == cp.size:
                    proof = item.hashes
                    break
    if proof is None:
        report.consistency["status"] = "unavailable"
        report.add(
            "consistency_unavailable",
            f"the bundle carries no consistency proof from size {old.size}: cannot check (ask for an export "
            f"with since_size={old.size})",
        )
        return
    try:
        if old.size == 0:
            pass  # every log extends the empty one
        else:
            verify_consistency(old.size, cp.size, proof, old.root, cp.root)
    except ProofError as exc:
        report.add(
            "consistency_failed",
            f"the log was rewritten: checkpoint {cp.size} does not extend checkpoint {old.size} ({exc.message})",
            file=L.CONSISTENCY,
        )
        return
    report.consistency["status"] = "verified"


def _verify_dir(root: Path, report: VerifyReport, trusted: list[VerifyKey], since: str | None) -> None:
    try:
        manifest_bytes = (root / L.MANIFEST).read_bytes()
        manifest = json.loads(manifest_bytes)
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        report.add("manifest_unreadable", f"manifest.json: {exc}", file=L.MANIFEST)
        return
    if manifest.get("format") != F.FORMAT:
        report.add("manifest_format", f"format {manifest.get('format')!r} is not {F.FORMAT}", file=L.MANIFEST)
    keys = _load_keys(root, report)
    for t in trusted:
        if not any(k.key == t for k in keys.values()):
            report.add("trusted_key_absent", f"the trusted key {t.to_base64()} is not in keys/", file=L.KEYS_DIR)
    _verify_manifest_sig(root, manifest_bytes, manifest, keys, trusted, report)
    exch = _obj(manifest, "exchange")
    origin = exch.get("origin") if isinstance(exch.get("origin"), str) else None
    verifiers = _note_verifiers(keys, trusted, origin)
    cp = _read_checkpoint(root, verifiers, manifest, report)
    try:
        cat_obj = json.loads((root / L.CATALOGUE).read_bytes())
        catalogue = cat_obj["models"] if isinstance(cat_obj.get("models"), dict) else {}
    except (OSError, ValueError, KeyError, AttributeError):
        report.add("catalogue_unreadable", "catalogue.json is missing or malformed", file=L.CATALOGUE)
        catalogue = {}
    totals, streamed = _verify_records(root, manifest, keys, cp, catalogue, report)
    _check_files(root, manifest, streamed, report)
    recomputed = totals.to_json()
    report.totals = recomputed
    for line in F.diff_json(manifest.get("totals"), recomputed, "totals"):
        report.add("totals_mismatch", line, file=L.MANIFEST)
    try:
        summary = (root / L.SUMMARY).read_bytes()
    except OSError:
        summary = None
    if summary is not None and summary != F.summary_csv(recomputed):
        report.add(
            "summary_mismatch", "summary.csv does not show the totals recomputed from the records", file=L.SUMMARY
        )
    listed_keys = exch.get("key_ids")
    if isinstance(listed_keys, list) and sorted(listed_keys) != sorted(keys):
        report.add("keys_mismatch", "keys/ does not hold exactly the key ids the manifest lists", file=L.KEYS_DIR)
    if since is not None:
        if cp is None:
            report.add("consistency_unavailable", "no checkpoint in the bundle to compare with")
        else:
            _check_consistency(root, cp, since, verifiers, report)


def exchange_key_id(origin: str, key: VerifyKey) -> str:
    """The C2SP key id (hex) of the exchange key under its log origin (how manifest.sig names it)."""
    return key_id_hex(origin, key)
