"""Streaming writer of audit bundles: feed every log entry of [0, checkpoint size) in order, get a signed bundle.

Memory stays bounded whatever the log size: entries are hashed in aligned blocks of `block_size` leaves;
a matching record's line is written at once and the lower part of its inclusion proof (inside its
block) goes to a spool file; only block roots (32 bytes per block), the last partial block and the
blocks that hold a `since` boundary stay in memory. finish() completes every proof from the block
tree in a second pass over the spool file, checks the recomputed root against the checkpoint, and
writes the manifest (sha256 of every file, totals computed incrementally) and its DSSE signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange.audit import facts as F
from exchange.audit import layout as L
from federation.canonical import canonical_bytes
from federation.dsse import sign_envelope
from federation.keys import SigningKey, key_id_hex
from federation.merkle import InMemoryTree, consistency_proof, inclusion_proof, leaf_hash, range_hash, tree_root
from federation.note import parse_checkpoint
from identifiers.errors import ConflictError

DEFAULT_BLOCK = 1024


class BundleLogMismatchError(ConflictError):
    """The log entries fed to the writer do not hash to the checkpoint's root (the stored log was changed)."""

    code = "log_checkpoint_mismatch"


@dataclass(frozen=True)
class BundleKeyInfo:
    """A public key to list in keys/ (role: exchange, peer-exchange or participant)."""

    key_id: str
    name: str
    public_key: str
    role: str
    owner: str | None = None
    not_before: int | None = None
    not_after: int | None = None

    def to_json(self) -> dict[str, Any]:
        """keys/<id>.json content."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "public_key": self.public_key,
            "role": self.role,
            "owner": self.owner,
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


class _SplitSource:
    """HashSource over: a tree of full-block roots, the partial tail block, and a few saved blocks."""

    def __init__(
        self, block: int, blocks: InMemoryTree, tail_start: int, tail: InMemoryTree, saved: Mapping[int, InMemoryTree]
    ) -> None:
        self.block, self.blocks, self.tail_start, self.tail, self.saved = block, blocks, tail_start, tail, saved

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Aligned power-of-two range [start, end)."""
        b = self.block
        if end - start >= b:
            return self.blocks.subtree_hash(start // b, end // b)
        if start >= self.tail_start:
            return self.tail.subtree_hash(start - self.tail_start, end - self.tail_start)
        tree = self.saved.get(start // b)
        if tree is None:
            raise ValueError(f"block of [{start}, {end}) was not kept")
        base = (start // b) * b
        return tree.subtree_hash(start - base, end - base)


class BundleWriter:
    """Writes one bundle directory; feed(index, stored_bytes) for every index 0..size-1, then finish()."""

    def __init__(
        self,
        out_dir: Path,
        *,
        export_id: str,
        created_at: int,
        authority: str,
        origin: str,
        filters: Mapping[str, Any],
        checkpoint_note: str,
        keys: Sequence[BundleKeyInfo],
        catalogue: Mapping[str, Mapping[str, Any]],
        since_sizes: Sequence[int] = (),
        block_size: int = DEFAULT_BLOCK,
        signer_keys: Mapping[str, BundleKeyInfo] | None = None,
    ) -> None:
        if block_size < 1 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two")
        self.dir = Path(out_dir)
        (self.dir / L.KEYS_DIR).mkdir(parents=True, exist_ok=False)
        self.export_id, self.created_at, self.authority, self.origin = export_id, created_at, authority, origin
        self.filters = F.normalize_filters(filters)
        self.note = checkpoint_note
        text = checkpoint_note[: checkpoint_note.rfind("\n\n") + 1]
        self.checkpoint = parse_checkpoint(text)
        if self.checkpoint.origin != origin:
            raise ValueError("checkpoint origin is not the exchange's origin")
        self.size = self.checkpoint.size
        self.keys = list(keys)
        #: keys (by id) of participants that may sign records, e.g. node keys of usage reports: each one that
        #: signed a record written to the bundle is added to keys/, so node signatures verify offline
        self.signer_keys = dict(signer_keys or {})
        self.catalogue = {k: dict(v) for k, v in catalogue.items()}
        self.since = sorted({s for s in since_sizes if 0 < s < self.size})
        self.block = block_size
        self.totals = F.Totals()
        self.records_seen = 0
        self.records_written = 0
        self._next = 0
        self._leaves: list[bytes] = []
        self._pending: list[int] = []
        self._blocks = InMemoryTree()
        self._saved: dict[int, InMemoryTree] = {}
        self._keep = {s // block_size for s in self.since}
        self._contracts: dict[str, F.RecordFacts] = {}
        self._records = open(self.dir / L.RECORDS, "wb")  # noqa: SIM115 - closed in finish()
        self._spool_path = self.dir / ".proofs.spool"
        self._spool = open(self._spool_path, "wb")  # noqa: SIM115 - closed in finish()

    # -- pass 1 -----------------------------------------------------------------------------------

    def feed(self, index: int, entry: bytes) -> bool:
        """Take log entry `index` (its stored bytes); return True when it matched the filters."""
        if index != self._next:
            raise ValueError(f"expected log index {self._next}, got {index}")
        if index >= self.size:
            raise ValueError(f"log index {index} is beyond the checkpoint size {self.size}")
        self._next += 1
        self.records_seen += 1
        self._leaves.append(leaf_hash(entry))
        matched = False
        try:
            kind, _raw, payload = F.decode_payload(json.loads(entry))
        except (F.FactsError, ValueError):
            kind = None
        if kind is not None:
            facts = F.record_facts(kind, payload, self.catalogue, self._contracts)
            if not F.filter_violations(facts, self.filters):
                matched = True
                self.totals.add(facts)
                cid = F.contract_key(kind, payload)
                if cid is not None:
                    self._contracts[cid] = facts
                self._add_signers(entry)
                self._records.write(L.record_line(index, entry))
                self._pending.append(index)
                self.records_written += 1
        if len(self._leaves) == self.block:
            self._close_block()
        return matched

    def _add_signers(self, entry: bytes) -> None:
        """Add to keys/ the participant keys that signed a written record."""
        if not self.signer_keys:
            return
        listed = {k.key_id for k in self.keys}
        for sig in json.loads(entry).get("signatures") or ():
            kid = sig.get("keyid") if isinstance(sig, dict) else None
            if isinstance(kid, str) and kid not in listed and kid in self.signer_keys:
                self.keys.append(self.signer_keys[kid])
                listed.add(kid)

    def _close_block(self) -> None:
        start = self._next - self.block
        tree = InMemoryTree(self._leaves)
        for i in self._pending:
            lower = tree.inclusion_proof(i - start, self.block)
            self._spool.write(L.proof_line(i, lower))
        b = start // self.block
        if b in self._keep:
            self._saved[b] = tree
        self._blocks.append(tree.root())
        self._leaves = []
        self._pending = []

    # -- pass 2 -----------------------------------------------------------------------------------

    def _upper_path(self, source: _SplitSource, index: int) -> list[bytes]:
        """Siblings above index's full block, top-down (RFC 9162 PATH until the block's own node)."""
        a = (index // self.block) * self.block
        lo, hi = 0, self.size
        path: list[bytes] = []
        while not (lo == a and hi == a + self.block):
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(range_hash(source, lo + k, hi))
                hi = lo + k
            else:
                path.append(range_hash(source, lo, lo + k))
                lo += k
        return path

    def _write_file(self, name: str, data: bytes) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def finish(self, signing_key: SigningKey, signed_at: int | None = None) -> dict[str, Any]:
        """Complete proofs, write every other file and the signed manifest; return the manifest.

        `signed_at` (epoch seconds, recorded in the manifest): when the key signs, so a verifier checks the key's
        validity at that time (an export may run after a key rotation that followed its request)."""
        if self._next != self.size:
            raise ValueError(f"fed {self._next} entries but the checkpoint has {self.size}")
        self._records.close()
        self._spool.close()
        tail_start = self._next - len(self._leaves)
        tail = InMemoryTree(self._leaves)
        source = _SplitSource(self.block, self._blocks, tail_start, tail, self._saved)
        if tree_root(source, self.size) != self.checkpoint.root:
            raise BundleLogMismatchError(
                f"the log's first {self.size} entries do not hash to the checkpoint root: the stored log was changed"
            )
        proofs = 0
        with open(self._spool_path, "rb") as spool, open(self.dir / L.PROOFS, "wb") as out:
            for line in spool:
                index, lower = L.parse_proof_line(line)
                upper = self._upper_path(source, index)
                out.write(L.proof_line(index, lower + upper[::-1]))
                proofs += 1
            for index in self._pending:
                out.write(L.proof_line(index, inclusion_proof(source, index, self.size)))
                proofs += 1
        os.unlink(self._spool_path)
        consistency = b"".join(
            L.consistency_line(s, self.size, consistency_proof(source, s, self.size)) for s in self.since
        )
        self._write_file(L.CONSISTENCY, consistency)
        self._write_file(L.CHECKPOINT, self.note.encode("utf-8"))
        self._write_file(L.CATALOGUE, canonical_bytes({"models": self.catalogue}))
        for key in self.keys:
            self._write_file(L.key_file_name(key.key_id), canonical_bytes(key.to_json()))
        totals = self.totals.to_json()
        self._write_file(L.SUMMARY, F.summary_csv(totals))
        files = {}
        for name in sorted([*L.FIXED_FILES, *(L.key_file_name(k.key_id) for k in self.keys)]):
            path = self.dir / name
            files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        public = signing_key.public
        signer_id = key_id_hex(self.origin, public)
        manifest = {
            "format": F.FORMAT,
            "export_id": self.export_id,
            "created_at": self.created_at,
            "exchange": {
                "authority": self.authority,
                "origin": self.origin,
                "key_id": signer_id,
                "public_key": public.to_base64(),
                "key_ids": sorted(k.key_id for k in self.keys),
            },
            "filters": self.filters,
            "scope": {"from_index": 0, "to_index": self.size},
            "checkpoint": {"size": self.size, "root": _b64(self.checkpoint.root)},
            "counts": {
                "records": self.records_written,
                "proofs": proofs,
                "keys": len(self.keys),
                "consistency_proofs": len(self.since),
                "log_entries_scanned": self.records_seen,
            },
            "totals": totals,
            "files": files,
        }
        if signed_at is not None:
            manifest["signed_at"] = signed_at
        manifest_bytes = canonical_bytes(manifest)
        self._write_file(L.MANIFEST, manifest_bytes)
        envelope = sign_envelope(L.MANIFEST_PAYLOAD_TYPE, manifest_bytes, [(signer_id, signing_key)])
        self._write_file(L.MANIFEST_SIG, canonical_bytes(envelope))
        return manifest

    def abort(self) -> None:
        """Close open files (the caller removes the directory)."""
        for f in (self._records, self._spool):
            if not f.closed:
                f.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack(bundle_dir: Path, archive: Path, top: str) -> Path:
    """tar.gz the bundle directory under one top-level directory `top`; return the archive path."""
    tmp = archive.with_suffix(archive.suffix + ".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"{top}/{path.relative_to(bundle_dir).as_posix()}", recursive=False)
    os.replace(tmp, archive)
    return archive
