"""Standalone verifier of regulator audit bundles: no database, no network, only the bundle's bytes.

The bundle is hostile input. Dependencies, kept small on purpose so a regulator can read all of it: the
Python standard library, `cryptography` and `rfc8785` (through federation.keys/canonical/dsse/note/merkle),
`jsonschema` (exchange.audit.schemas) and the pure bundle modules exchange.audit.{facts,layout,limits,
source,strictjson,invariants}; tests/exchange/test_audit_verify.py enforces this. The algorithm, every
limit, reason code and exit code are in specs/audit-verifier.md; every problem found is reported (file,
line, log index, reason code), not only the first, and never as a traceback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from exchange.audit import facts as F
from exchange.audit import layout as L
from exchange.audit import schemas as S
from exchange.audit.invariants import Invariants
from exchange.audit.limits import DEFAULT_LIMITS, Limits
from exchange.audit.source import Source, SourceError, open_source
from exchange.audit.strictjson import StrictJsonError, loads, loads_canonical
from federation.dsse import pae
from federation.errors import KeyFormatError, NoteError, ProofError
from federation.keys import VerifyKey, key_id_hex
from federation.merkle import leaf_hash, verify_consistency, verify_inclusion
from federation.note import Checkpoint, NoteVerifier, parse_checkpoint, verify_note

MAX_PROBLEMS = 10_000
_PAYLOAD_TYPE = re.compile(r"application/vnd\.hetex\.[a-z0-9][a-z0-9.-]*\+json\Z")
_B64_HASH = re.compile(r"[A-Za-z0-9+/]{43}=\Z")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")
_MAX_PROOF_HASHES = 64
#: roles whose valid signature on a usage record vouches for the node that measured it
NODE_VOUCHERS = frozenset({"participant", "peer-exchange"})
_CONTRACT_TYPE = "application/vnd.hetex.contract+json"
_PEER_CHECKPOINT_TYPE = "application/vnd.hetex.peer-checkpoint+json"


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
        """One line: `file line n (log index i): code: message` (control characters escaped)."""
        where = self.file or "bundle"
        if self.line is not None:
            where += f" line {self.line}"
        if self.log_index is not None:
            where += f" (log index {self.log_index})"
        return _one_line(f"{where}: {self.code}: {self.message}")


def _one_line(text: str) -> str:
    """Escape control characters, so a hostile name or value cannot break the one-line-per-problem output."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@dataclass
class VerifyReport:
    """Outcome of verify_bundle: ok when there is no problem, trusted when also anchored to a pinned key."""

    bundle: str
    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    records: int = 0
    signatures_checked: int = 0
    proofs_checked: int = 0
    checkpoint: dict[str, Any] | None = None
    exchange_key_id: str | None = None
    trusted_key_pinned: bool = False
    anchored: bool = False
    consistency: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    totals: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None  # the parsed manifest; read it only when ok
    records_sha256: str | None = None  # SHA-256 over the leaf hashes of the records, in file order
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no problem was found (the bundle is internally consistent)."""
        return not self.problems and not self.problems_omitted

    @property
    def trusted(self) -> bool:
        """True when ok and the manifest and checkpoint are signed by a key given with --trusted-key."""
        return self.ok and self.anchored

    @property
    def status(self) -> str:
        """VERIFIED (exit 0), UNTRUSTED (exit 3: consistent, not anchored to a pinned key) or FAILED (exit 1)."""
        return "FAILED" if not self.ok else "VERIFIED" if self.anchored else "UNTRUSTED"

    @property
    def exit_code(self) -> int:
        """0 verified and trusted, 1 problems, 3 consistent but not anchored to a trusted key."""
        return {"VERIFIED": 0, "FAILED": 1, "UNTRUSTED": 3}[self.status]

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
        """Machine-readable report (figures only when the bundle verified)."""
        return {
            "bundle": self.bundle,
            "status": self.status,
            "ok": self.ok,
            "trusted": self.trusted,
            "records": self.records,
            "records_sha256": self.records_sha256 if self.ok else None,
            "signatures_checked": self.signatures_checked,
            "proofs_checked": self.proofs_checked,
            "checkpoint": self.checkpoint,
            "exchange_key_id": self.exchange_key_id,
            "trusted_key_pinned": self.trusted_key_pinned,
            "anchored_to_trusted_key": self.anchored,
            "consistency": self.consistency,
            "filters": self.filters if self.ok else None,
            "totals": self.totals if self.ok else None,
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

    def valid_at(self, at: int | None) -> bool:
        """True when `at` is inside [not_before, not_after] (None: no time to check)."""
        if at is None:
            return True
        return not (self.not_before is not None and at < self.not_before) and not (
            self.not_after is not None and at > self.not_after
        )


@dataclass
class _Ctx:
    """What one verification run knows so far."""

    source: Source
    report: VerifyReport
    trusted: list[VerifyKey]
    limits: Limits
    manifest: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, BundleKey] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    created_at: int | None = None


# ---------------------------------------------------------------------------------------------------
# entry point


def verify_bundle(
    path: str | os.PathLike[str],
    trusted_keys: Sequence[VerifyKey] | None = None,
    since_checkpoint: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifyReport:
    """Verify a bundle (directory, .tar or .tar.gz) and return a report naming every problem found.

    `trusted_keys`: the exchange key(s) the regulator obtained out of band; the manifest and the
    checkpoint must be signed by one of them for the report to be `trusted`. `since_checkpoint`: an
    earlier signed checkpoint note of the same log; the bundle must prove its own checkpoint extends it.
    """
    started = time.perf_counter()
    report = VerifyReport(bundle=str(path), trusted_key_pinned=bool(trusted_keys))
    try:
        source = open_source(Path(path), limits)
    except SourceError as exc:
        report.add(exc.code, exc.message, file=exc.file)
    else:
        ctx = _Ctx(source, report, list(trusted_keys or ()), limits)
        try:
            for refused in getattr(source, "refused", ()):
                report.add(refused.code, refused.message, file=refused.file)
            _verify(ctx, since_checkpoint)
        except SourceError as exc:
            report.add(exc.code, exc.message, file=exc.file)
        except (MemoryError, RecursionError) as exc:
            report.add("resource_exhausted", f"{type(exc).__name__} while reading the bundle")
        finally:
            source.close()
    if not report.ok:
        report.anchored = False
    report.seconds = time.perf_counter() - started
    return report


def _verify(ctx: _Ctx, since: str | None) -> None:
    report = ctx.report
    manifest_bytes = _manifest(ctx)
    if manifest_bytes is None:
        return
    manifest = ctx.manifest
    ctx.keys = _load_keys(ctx)
    for t in ctx.trusted:
        if not any(k.key == t and k.role == "exchange" for k in ctx.keys.values()):
            report.add("trusted_key_absent", f"the trusted key {t.to_base64()} is not an exchange key in keys/")
    manifest_anchored = _verify_manifest_sig(ctx, manifest_bytes)
    cp, cp_anchored = _read_checkpoint(ctx)
    catalogue = _catalogue(ctx)
    totals = _verify_records(ctx, cp, catalogue)
    _check_files(ctx)
    recomputed = totals.to_json()
    report.totals = recomputed
    report.filters = manifest["filters"]
    for line in F.diff_json(manifest["totals"], recomputed, "totals"):
        report.add("totals_mismatch", line, file=L.MANIFEST)
    summary = _small(ctx, L.SUMMARY)
    if summary is not None and summary != F.summary_csv(recomputed):
        report.add(
            "summary_mismatch", "summary.csv does not show the totals recomputed from the records", file=L.SUMMARY
        )
    if sorted(manifest["exchange"]["key_ids"]) != sorted(ctx.keys):
        report.add("keys_mismatch", "keys/ does not hold exactly the key ids the manifest lists", file=L.KEYS_DIR)
    if since is not None:
        if cp is None:
            report.add("consistency_unavailable", "no checkpoint in the bundle to compare with")
        else:
            _check_consistency(ctx, cp, since, _note_verifiers(ctx, trusted_only=bool(ctx.trusted)))
    report.anchored = bool(ctx.trusted) and manifest_anchored and cp_anchored


def _small(ctx: _Ctx, name: str) -> bytes | None:
    """A small file's bytes (hashed for the file check), None when absent."""
    data = ctx.source.small(name)
    if data is not None:
        ctx.hashes[name] = hashlib.sha256(data).hexdigest()
    return data


def _json(ctx: _Ctx, name: str, data: bytes, schema: str | None, *, canonical: bool = True) -> Any:
    """Parse a file strictly (and canonically) and validate it; report and return None when it is not valid."""
    try:
        obj = loads_canonical(data) if canonical else loads(data)
        if schema is not None:
            S.validate(schema, obj, data)
    except StrictJsonError as exc:
        ctx.report.add(exc.code, exc.message, file=name)
        return None
    except S.SchemaError as exc:
        ctx.report.add("schema_invalid", str(exc), file=name)
        return None
    return obj


def _manifest(ctx: _Ctx) -> bytes | None:
    data = _small(ctx, L.MANIFEST)
    if data is None:
        ctx.report.add("manifest_missing", "the bundle has no manifest.json", file=L.MANIFEST)
        return None
    obj = _json(ctx, L.MANIFEST, data, S.MANIFEST)
    if obj is None:
        return None  # nothing else can be checked without a valid manifest
    ctx.manifest = ctx.report.manifest = obj
    ctx.created_at = obj.get("signed_at", obj["created_at"])
    if ctx.created_at < obj["created_at"]:
        ctx.report.add("manifest_malformed", "signed_at is before created_at", file=L.MANIFEST)
    exch = obj["exchange"]
    ctx.report.exchange_key_id = exch["key_id"]
    return data


# ---------------------------------------------------------------------------------------------------
# keys and signatures


def _load_keys(ctx: _Ctx) -> dict[str, BundleKey]:
    keys: dict[str, BundleKey] = {}
    names = sorted(n for n in ctx.source.names if n.startswith(L.KEYS_DIR + "/"))
    if not names:
        ctx.report.add("keys_missing", "the bundle has no keys/ files", file=L.KEYS_DIR)
    for rel in names:
        data = _small(ctx, rel)
        obj = _json(ctx, rel, data or b"", S.KEY)
        if obj is None:
            continue
        kid = obj["key_id"]
        try:
            key = VerifyKey.from_base64(obj["public_key"])
            derived = key_id_hex(obj["name"], key)
        except KeyFormatError as exc:
            ctx.report.add("key_malformed", f"cannot read the key: {exc.message}", file=rel)
            continue
        if rel != L.key_file_name(kid):
            ctx.report.add("key_malformed", f"key file name does not match key id {kid}", file=rel)
            continue
        if derived != kid:
            ctx.report.add(
                "key_id_mismatch",
                f"key id {kid} is not the C2SP id {derived} of this key under the name {obj['name']!r}",
                file=rel,
            )
            continue
        nb, na = obj["not_before"], obj["not_after"]
        if nb is not None and na is not None and na < nb:
            ctx.report.add("key_malformed", f"not_after {na} is before not_before {nb}", file=rel)
        keys[kid] = BundleKey(kid, obj["name"], key, obj["role"], obj["owner"], nb, na)
    return keys


def _envelope_parts(env: Any) -> tuple[str, bytes, list[tuple[str | None, bytes]]] | None:
    """(payloadType, payload, [(keyid, sig)]) of a DSSE envelope of the documented shape, else None."""
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        return None
    ptype, payload, sigs = env["payloadType"], env["payload"], env["signatures"]
    if not isinstance(ptype, str) or not isinstance(payload, str) or not isinstance(sigs, list) or not sigs:
        return None
    if len(sigs) > 16 or not _B64.match(payload):
        return None
    try:
        raw = base64.b64decode(payload, validate=True)
        out: list[tuple[str | None, bytes]] = []
        for s in sigs:
            if not isinstance(s, dict) or not set(s) <= {"keyid", "sig"} or not isinstance(s.get("sig"), str):
                return None
            kid = s.get("keyid")
            if kid is not None and not isinstance(kid, str):
                return None
            out.append((kid, base64.b64decode(s["sig"], validate=True)))
    except (binascii.Error, ValueError):
        return None
    return ptype, raw, out


def _verify_manifest_sig(ctx: _Ctx, manifest_bytes: bytes) -> bool:
    """Check manifest.sig; True when it is signed by a trusted key (always False when nothing is pinned)."""
    report, exch = ctx.report, ctx.manifest["exchange"]
    data = _small(ctx, L.MANIFEST_SIG)
    if data is None:
        report.add("manifest_unsigned", "manifest.sig is missing", file=L.MANIFEST_SIG)
        return False
    env = _json(ctx, L.MANIFEST_SIG, data, None)
    parts = _envelope_parts(env) if env is not None else None
    if parts is None:
        if env is not None:
            report.add("manifest_signature_malformed", "manifest.sig is not a DSSE envelope", file=L.MANIFEST_SIG)
        return False
    ptype, payload, sigs = parts
    if ptype != L.MANIFEST_PAYLOAD_TYPE:
        report.add("manifest_signature_malformed", f"payload type {ptype[:80]!r}", file=L.MANIFEST_SIG)
        return False
    if not hmac.compare_digest(payload, manifest_bytes):
        report.add(
            "manifest_signature_mismatch", "manifest.sig signs other bytes than manifest.json", file=L.MANIFEST_SIG
        )
    kid = exch["key_id"]
    entry = ctx.keys.get(kid)
    if entry is None or entry.role != "exchange":
        report.add("manifest_key_unknown", f"the manifest's exchange key {kid} is not an exchange key in keys/")
        return False
    if entry.key.to_base64() != exch["public_key"]:
        report.add("manifest_key_mismatch", f"manifest.exchange.public_key is not the key {kid} in keys/")
    message = pae(ptype, payload)
    if not any(k == kid and entry.key.is_valid(s, message) for k, s in sigs):
        code = "manifest_signed_by_unknown_key" if all(k != kid for k, _s in sigs) else "manifest_signature_invalid"
        report.add(code, f"manifest.sig carries no valid signature by the exchange key {kid}", file=L.MANIFEST_SIG)
        return False
    if not entry.valid_at(ctx.created_at):
        report.add(
            "manifest_key_not_valid",
            f"key {kid} (valid {entry.not_before}..{entry.not_after}) was not valid when the manifest was signed "
            f"({ctx.created_at})",
            file=L.MANIFEST_SIG,
        )
        return False
    if ctx.trusted and entry.key not in ctx.trusted:
        report.add(
            "manifest_untrusted_key",
            f"manifest.sig is signed by {kid}, not by the trusted exchange key (--trusted-key)",
            file=L.MANIFEST_SIG,
        )
        return False
    return bool(ctx.trusted)


def _note_verifiers(ctx: _Ctx, *, trusted_only: bool, before: int | None = None) -> list[NoteVerifier]:
    """Exchange keys that may have signed a checkpoint: a note carries no time, so only a key that did not yet
    exist when the manifest was signed (not_before > signed_at) is excluded; a retired key may have signed it."""
    out = []
    for k in ctx.keys.values():
        if k.role != "exchange" or (trusted_only and k.key not in ctx.trusted):
            continue
        if before is not None and k.not_before is not None and k.not_before > before:
            continue
        try:
            out.append(NoteVerifier(k.name, k.key))
        except KeyFormatError:
            continue
    return out


def _read_checkpoint(ctx: _Ctx) -> tuple[Checkpoint | None, bool]:
    report = ctx.report
    data = _small(ctx, L.CHECKPOINT)
    try:
        note = (data or b"").decode("utf-8")
    except UnicodeDecodeError:
        note = ""
    if not note:
        report.add("checkpoint_missing", "the bundle has no readable checkpoint", file=L.CHECKPOINT)
        return None, False
    pinned = bool(ctx.trusted)
    anchored = False
    try:
        cp = parse_checkpoint(verify_note(note, _note_verifiers(ctx, trusted_only=pinned, before=ctx.created_at)))
        anchored = pinned
    except NoteError as exc:
        try:
            verify_note(note, _note_verifiers(ctx, trusted_only=pinned))
            report.add(
                "checkpoint_key_not_valid",
                f"the checkpoint's key did not exist yet when the manifest was signed ({ctx.created_at})",
                file=L.CHECKPOINT,
            )
        except NoteError:
            report.add("checkpoint_signature_invalid", f"checkpoint: {exc.message}", file=L.CHECKPOINT)
        try:
            cp = parse_checkpoint(note[: note.rfind("\n\n") + 1])
        except NoteError:
            return None, False
    report.checkpoint = {"origin": cp.origin, "size": cp.size, "root": base64.b64encode(cp.root).decode()}
    if ctx.manifest["exchange"]["origin"] != cp.origin:
        report.add(
            "checkpoint_mismatch", f"checkpoint origin {cp.origin[:80]!r} is not the manifest's", file=L.CHECKPOINT
        )
    mcp = ctx.manifest["checkpoint"]
    if mcp["size"] != cp.size or mcp["root"] != report.checkpoint["root"]:
        report.add("checkpoint_mismatch", "the manifest names another checkpoint than the bundle's", file=L.MANIFEST)
    return cp, anchored


def _catalogue(ctx: _Ctx) -> dict[str, Any]:
    data = _small(ctx, L.CATALOGUE)
    if data is None:
        ctx.report.add("catalogue_unreadable", "catalogue.json is missing", file=L.CATALOGUE)
        return {}
    obj = _json(ctx, L.CATALOGUE, data, S.CATALOGUE)
    return obj["models"] if obj is not None else {}


# ---------------------------------------------------------------------------------------------------
# records and proofs


def _lines(ctx: _Ctx, name: str) -> Iterator[bytes]:
    """The lines of a large file, each within the line limit; hashes the file as it goes."""
    f: BinaryIO | None = ctx.source.stream(name)
    if f is None:
        return
    h = hashlib.sha256()
    n = 0
    limit = ctx.limits.max_line_bytes
    with f:
        while line := f.readline(limit + 1):
            h.update(line)
            n += 1
            if len(line) > limit:
                raise SourceError("line_too_long", f"line {n} is longer than {limit} bytes", name)
            if n > ctx.limits.max_records:
                raise SourceError("too_many_lines", f"more than {ctx.limits.max_records} lines", name)
            yield line
    ctx.hashes[name] = h.hexdigest()


def _record(line: bytes) -> tuple[int, bytes, dict[str, Any], tuple[str, bytes, list[tuple[str | None, bytes]]]]:
    """(index, stored bytes, envelope, envelope parts) of a record line; StrictJsonError/L.LineError if bad."""
    index, raw, _entry = L.parse_record_line(line)
    env = loads_canonical(raw)
    parts = _envelope_parts(env)
    if parts is None or not _PAYLOAD_TYPE.match(parts[0]):
        raise L.LineError("the entry is not a DSSE envelope of a hetex record type")
    return index, raw, env, parts


def _verify_records(ctx: _Ctx, cp: Checkpoint | None, catalogue: dict[str, Any]) -> F.Totals:
    """Stream records.jsonl and proofs.jsonl side by side: order, signature, filters, inclusion, invariants."""
    report, manifest = ctx.report, ctx.manifest
    filters, scope = manifest["filters"], manifest["scope"]
    complete = all(filters.get(k) is None for k in F.FILTER_KEYS)
    if complete and cp is not None and (scope["from_index"] != 0 or scope["to_index"] != cp.size):
        report.add("scope_mismatch", f"an unfiltered export must scan [0, {cp.size}), not {scope}", file=L.MANIFEST)
    totals = F.Totals()
    contracts: dict[str, F.RecordFacts] = {}  # facts of contract records seen so far (section 3 of the spec)
    invariants = Invariants(complete=complete)
    if L.RECORDS not in ctx.source.names:
        report.add("file_missing", "records.jsonl is missing", file=L.RECORDS)
    records, proofs = _lines(ctx, L.RECORDS), _lines(ctx, L.PROOFS)
    leaves = hashlib.sha256()
    prev: int | None = None
    line_no = n_proofs = 0
    while True:
        rec, prf = next(records, None), next(proofs, None)
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
            index, raw, _env, (ptype, payload, sigs) = _record(rec)
        except StrictJsonError as exc:
            report.add(f"record_{exc.code}", exc.message, file=L.RECORDS, line=line_no)
            continue
        except L.LineError as exc:
            report.add("record_malformed", str(exc), file=L.RECORDS, line=line_no)
            continue
        where = {"file": L.RECORDS, "line": line_no, "log_index": index}
        leaves.update(leaf_hash(raw))
        if prev is not None and index <= prev:
            report.add(
                "record_out_of_order", f"log index {index} does not follow {prev} (reordered or duplicated)", **where
            )
        elif complete and index != (prev + 1 if prev is not None else scope["from_index"]):
            report.add(
                "record_missing",
                f"unfiltered export skips log indices {(prev + 1) if prev is not None else 0}..{index - 1}",
                **where,
            )
        prev = index if prev is None else max(prev, index)
        if cp is not None and index >= cp.size:
            report.add("record_beyond_checkpoint", f"log index {index} is not in the tree of size {cp.size}", **where)
        facts: F.RecordFacts | None = None
        try:
            kind = F.kind_of(ptype)
            obj = loads_canonical(payload)
            if not isinstance(obj, dict):
                raise F.FactsError("the payload is not a JSON object")
            facts = F.record_facts(kind, obj, catalogue, contracts)
            cid = F.contract_key(kind, obj)
            if cid is not None:
                contracts[cid] = facts
            for v in invariants.see(index, ptype, payload, obj, kind):
                report.add(v.code, v.message, **where)
        except StrictJsonError as exc:
            report.add(f"payload_{exc.code}", exc.message, **where)
        except F.FactsError as exc:
            report.add("record_malformed", str(exc), **where)
        _check_signature(ctx, ptype, payload, sigs, facts, where)
        if facts is not None:
            for why in F.filter_violations(facts, filters):
                report.add("filter_not_honoured", why, **where)
            totals.add(facts)
        if prf is None:
            report.add("proof_missing", "no inclusion proof for this record (proofs.jsonl is short)", **where)
        elif cp is not None:
            _check_proof(prf, index, raw, cp, report, where)
    if complete and cp is not None and prev is not None and prev + 1 != scope["to_index"]:
        report.add("record_missing", f"unfiltered export ends at log index {prev}, not {scope['to_index'] - 1}")
    if complete and cp is not None and prev is None and scope["to_index"] != scope["from_index"]:
        report.add("record_missing", f"unfiltered export of [{scope['from_index']}, {scope['to_index']}) has no record")
    if not complete:
        lo, hi = scope["from_index"], scope["to_index"]
        if prev is not None and not lo <= prev < hi:
            report.add("record_outside_scope", f"log index {prev} is outside the scanned range [{lo}, {hi})")
    report.records_sha256 = leaves.hexdigest()
    counts = manifest["counts"]
    if counts["records"] != report.records:
        report.add(
            "count_mismatch",
            f"manifest counts {counts['records']} records, the file has {report.records}",
            file=L.RECORDS,
        )
    if counts["proofs"] != n_proofs:
        report.add(
            "count_mismatch", f"manifest counts {counts['proofs']} proofs, the file has {n_proofs}", file=L.PROOFS
        )
    if counts["keys"] != len([n for n in ctx.source.names if n.startswith(L.KEYS_DIR + "/")]):
        report.add("count_mismatch", f"manifest counts {counts['keys']} keys", file=L.KEYS_DIR)
    return totals


def _check_signature(
    ctx: _Ctx,
    ptype: str,
    payload: bytes,
    sigs: list[tuple[str | None, bytes]],
    facts: F.RecordFacts | None,
    where: dict[str, Any],
) -> None:
    """Every signature by a key in keys/ must verify and be inside its key's validity; at least one must exist;
    a usage record must also carry a valid signature by a participant (node) key, or by a peer exchange."""
    report = ctx.report
    report.signatures_checked += 1
    at = facts.at if facts is not None else None
    message = pae(ptype, payload)
    good: list[BundleKey] = []
    for kid, sig in sigs:
        entry = ctx.keys.get(kid) if kid is not None else None
        if entry is None:
            continue
        if not entry.key.is_valid(sig, message):
            report.add("record_signature_invalid", f"the signature by {kid} does not verify (record altered)", **where)
            return
        # A record's time is its business time (a usage period may end before the key that countersigns it
        # was made), so only the end of a key's validity is enforced: no record may claim a later time.
        if at is not None and entry.not_after is not None and at > entry.not_after:
            report.add("record_key_not_valid", f"key {kid} was retired before the record's time {at}", **where)
            return
        good.append(entry)
    if not good:
        kids = [k for k, _s in sigs]
        report.add("record_signed_by_unknown_key", f"no signature by a key in keys/ (key ids {kids})", **where)
        return
    if ptype == _CONTRACT_TYPE:
        _check_cross_exchange(ctx, payload, good, where)
    elif ptype == _PEER_CHECKPOINT_TYPE:
        _check_peer_checkpoint(ctx, payload, where)
    # a usage record mirrored from a peer exchange is vouched for by that exchange (its node keys live there)
    if facts is not None and facts.kind == "usage" and not any(k.role in NODE_VOUCHERS for k in good):
        report.add(
            "usage_node_signature_missing",
            "a usage record carries no valid signature by a node (participant) key in keys/",
            **where,
        )


def _check_cross_exchange(ctx: _Ctx, payload: bytes, good: list[BundleKey], where: dict[str, Any]) -> None:
    """A cross-exchange contract carries valid signatures of both its exchanges: at one of them, its own key
    and a peer exchange's; at a hub (a party to neither), two peer exchanges' (specs/federation.md 9.3)."""
    try:
        body = loads(payload)
    except StrictJsonError:
        return  # reported by the payload checks
    if not isinstance(body, dict) or body.get("kind") != "cross_exchange":
        return
    own = ctx.manifest["exchange"]["authority"]
    peers = {k.name for k in good if k.role == "peer-exchange"}
    if own in (body.get("owner_authority"), body.get("buyer_authority")):
        ok = bool(peers) and any(k.role == "exchange" for k in good)
    else:
        ok = len(peers) >= 2
    if not ok:
        ctx.report.add(
            "cross_exchange_signature_missing",
            "a cross-exchange contract without valid signatures of both its exchanges",
            **where,
        )


def _check_peer_checkpoint(ctx: _Ctx, payload: bytes, where: dict[str, Any]) -> None:
    """A member's checkpoint logged at its hub: the embedded note verifies under that member's key in keys/
    (a peer exchange named by the note's origin), and its origin, size and root are the record's."""
    problem = None
    try:
        body = loads(payload)
        if not isinstance(body, dict) or not isinstance(body.get("note"), str):
            raise ValueError("the record has no note")
        verifiers = [
            NoteVerifier(k.name, k.key)
            for k in ctx.keys.values()
            if k.role == "peer-exchange" and k.name == body.get("origin")
        ]
        if not verifiers:
            raise ValueError(f"no peer exchange key in keys/ for origin {str(body.get('origin'))[:80]!r}")
        cp = parse_checkpoint(verify_note(body["note"], verifiers))
        if (cp.origin, cp.size, base64.b64encode(cp.root).decode()) != (
            body.get("origin"),
            body.get("size"),
            body.get("root"),
        ):
            raise ValueError("origin, size or root differ from the signed note")
    except (StrictJsonError, NoteError, KeyFormatError, ValueError) as exc:
        problem = getattr(exc, "message", None) or str(exc)
    if problem is not None:
        ctx.report.add("peer_checkpoint_invalid", f"member checkpoint: {problem}", **where)


def _proof_line(line: bytes) -> tuple[int, list[bytes]]:
    obj = loads(line)
    if not isinstance(obj, dict) or set(obj) != {"hashes", "index"}:
        raise L.LineError('a proof line is {"hashes":[...],"index":<n>}')
    index, hashes = obj["index"], obj["hashes"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise L.LineError("index must be a non-negative integer")
    if not isinstance(hashes, list) or len(hashes) > _MAX_PROOF_HASHES:
        raise L.LineError(f"hashes must be a list of at most {_MAX_PROOF_HASHES} base64 SHA-256 hashes")
    if not all(isinstance(h, str) and _B64_HASH.match(h) for h in hashes):
        raise L.LineError("a hash is not base64 of 32 bytes")
    return index, [base64.b64decode(h) for h in hashes]


def _check_proof(
    line: bytes, index: int, raw: bytes, cp: Checkpoint, report: VerifyReport, where: dict[str, Any]
) -> None:
    pwhere = {**where, "file": L.PROOFS}
    try:
        p_index, hashes = _proof_line(line)
    except StrictJsonError as exc:
        report.add(f"proof_{exc.code}", exc.message, **pwhere)
        return
    except L.LineError as exc:
        report.add("proof_malformed", str(exc), **pwhere)
        return
    if p_index != index:
        report.add("proof_misaligned", f"proof line is for log index {p_index}, the record is {index}", **pwhere)
        return
    report.proofs_checked += 1
    try:
        verify_inclusion(leaf_hash(raw), index, cp.size, hashes, cp.root)
    except ProofError as exc:
        report.add("inclusion_proof_invalid", f"record not proven in the checkpoint: {exc.message}", **pwhere)


# ---------------------------------------------------------------------------------------------------
# files and consistency


def _check_files(ctx: _Ctx) -> None:
    report = ctx.report
    listed = ctx.manifest["files"]
    present = ctx.source.names - {L.MANIFEST, L.MANIFEST_SIG}
    for name in sorted(present - set(listed)):
        report.add("file_unlisted", "file is not listed (and so not signed) in the manifest", file=name)
    if L.CONSISTENCY in present and L.CONSISTENCY not in ctx.hashes:
        for _line in _lines(ctx, L.CONSISTENCY):
            pass
    for name in sorted(listed):
        if name not in present:
            report.add("file_missing", "listed in the manifest but missing from the bundle", file=name)
            continue
        got, want = ctx.hashes.get(name), listed[name]["sha256"]
        if got is None:
            got = _sha256_small(ctx, name)
        if got != want:
            report.add("file_hash_mismatch", f"sha256 {got} is not the manifest's {want}", file=name)
    for name in (L.RECORDS, L.PROOFS, L.CHECKPOINT, L.CATALOGUE, L.SUMMARY):
        if name not in listed:
            report.add("file_missing", "a required bundle file is not in the manifest", file=name)


def _sha256_small(ctx: _Ctx, name: str) -> str:
    data = _small(ctx, name)
    return hashlib.sha256(data or b"").hexdigest()


def _consistency_line(line: bytes) -> L.ConsistencyLine:
    obj = loads(line)
    if not isinstance(obj, dict) or set(obj) != {"hashes", "size1", "size2"}:
        raise L.LineError('a consistency line is {"hashes":[...],"size1":m,"size2":n}')
    sizes = obj["size1"], obj["size2"]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
        raise L.LineError("size1 and size2 must be non-negative integers")
    hashes = obj["hashes"]
    if not isinstance(hashes, list) or len(hashes) > _MAX_PROOF_HASHES * 2:
        raise L.LineError("hashes must be a list of base64 SHA-256 hashes")
    if not all(isinstance(h, str) and _B64_HASH.match(h) for h in hashes):
        raise L.LineError("a hash is not base64 of 32 bytes")
    return L.ConsistencyLine(sizes[0], sizes[1], [base64.b64decode(h) for h in hashes])


def _check_consistency(ctx: _Ctx, cp: Checkpoint, since: str, verifiers: list[NoteVerifier]) -> None:
    report = ctx.report
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
    if proof is None:
        for n, line in enumerate(_lines(ctx, L.CONSISTENCY), 1):
            try:
                item = _consistency_line(line)
            except (StrictJsonError, L.LineError) as exc:
                report.add("consistency_malformed", str(exc), file=L.CONSISTENCY, line=n)
                continue
            if proof is None and item.size1 == old.size and item.size2 == cp.size:
                proof = item.hashes
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


def exchange_key_id(origin: str, key: VerifyKey) -> str:
    """The C2SP key id (hex) of the exchange key under its log origin (how manifest.sig names it)."""
    return key_id_hex(origin, key)
