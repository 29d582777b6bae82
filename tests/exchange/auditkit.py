"""Test kit for audit bundles: realistic signed records in an in-memory RFC 6962 log, and bundle builders."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from exchange.audit.writer import BundleKeyInfo, BundleWriter
from exchange.services.audit import catalogue_facts
from exchange.services.participants import participant_key_id
from exchange.storage.participants import Participant
from federation.canonical import canonical_bytes
from federation.dsse import record_payload_type, sign_envelope
from federation.keys import SigningKey, key_id_hex
from federation.merkle import InMemoryTree, leaf_hash
from federation.note import Checkpoint, NoteSigner
from identifiers.catalogue import load_catalogue
from identifiers.ids import new_id_str

ORIGIN = "hetex.test/log"
MODELS = ["NV-H100-SXM", "NV-A100-80G-SXM", "HW-910C", "CAM-MLU370-X8"]
CATALOGUE = {code: facts for code, facts in catalogue_facts(load_catalogue()).items() if code in MODELS}
REGIONS = ["CN-GZ", "CN-NM", "CN-NX", "CN-GS", "CN-SH", "CN-BJ"]
MODES = ["per_minute", "compute_tier", "subscription", "project"]


@dataclass
class MemLog:
    """An append-only log of DSSE envelopes (stored as RFC 8785 bytes) with signed checkpoints."""

    key: SigningKey = field(default_factory=SigningKey.generate)
    origin: str = ORIGIN
    entries: list[bytes] = field(default_factory=list)
    tree: InMemoryTree = field(default_factory=InMemoryTree)
    node_key: SigningKey = field(default_factory=SigningKey.generate)

    @property
    def key_id(self) -> str:
        return key_id_hex(self.origin, self.key.public)

    def append(
        self, kind: str, payload: dict[str, Any], signer: SigningKey | None = None, kid: str | None = None
    ) -> int:
        signer = signer or self.key
        env = sign_envelope(record_payload_type(kind), canonical_bytes(payload), [(kid or self.key_id, signer)])
        data = canonical_bytes(env)
        self.entries.append(data)
        return self.tree.append(leaf_hash(data))

    def checkpoint(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        return Checkpoint(self.origin, size, self.tree.root(size)).sign([NoteSigner(self.origin, self.key)])

    def keys(self) -> list[BundleKeyInfo]:
        return [
            BundleKeyInfo(self.key_id, self.origin, self.key.public.to_base64(), "exchange"),
            BundleKeyInfo(self.node_kid, "node-1", self.node_key.public.to_base64(), "participant", owner="P1"),
        ]

    @property
    def node_kid(self) -> str:
        return key_id_hex("node-1", self.node_key.public)


def gen_records(n: int, *, seed: int = 1, t0: int = 1_700_000_000, step: int = 60, start: int = 0):
    """n (kind, record id, payload) triples: contract, usage, settlement in turn, spread over regions/models/modes."""
    rng = random.Random(seed * 1_000_003 + start)
    models = MODELS
    for i in range(start, start + n):
        at = t0 + i * step
        region, buyer = rng.choice(REGIONS), rng.choice(REGIONS)
        model, mode = rng.choice(models), rng.choice(MODES)
        cri = f"CRI1:HX:{region}:OP{i % 3}:S1:P{i % 7}:{model}:X"
        kind = ("contract", "usage", "settlement")[i % 3]
        if kind == "usage":
            body = {
                "contract_id": f"c{i}",
                "at": at,
                "device_minutes": 60 * rng.randint(1, 8),
                "pool_cri": cri,
                "seq": i,
            }
        elif kind == "contract":
            body = {
                "id": f"c{i}",
                "at": at,
                "pool_cri": cri,
                "model": model,
                "region": region,
                "buyer_region": buyer,
                "billing_mode": mode,
                "devices": rng.randint(1, 8),
            }
        else:
            body = {
                "id": f"s{i}",
                "at": at,
                "pool_cri": cri,
                "model": model,
                "region": region,
                "buyer_region": buyer,
                "billing_mode": mode,
                "buyer_debit_fen": rng.randint(100, 10_000_000),
                "device_hours": str(rng.randint(1, 64)),
            }
        yield kind, f"{kind[0]}{i}", body


def fill(log: MemLog, n: int, *, seed: int = 1, t0: int = 1_700_000_000, step: int = 60) -> None:
    """Append n generated records to an in-memory log (usage signed by the node key)."""
    for kind, _rid, body in gen_records(n, seed=seed, t0=t0, step=step, start=log.tree.size):
        if kind == "usage":
            log.append(kind, body, log.node_key, log.node_kid)
        else:
            log.append(kind, body)


async def register_node(ledger: Any, node_key: SigningKey) -> str:
    """Register the node's key as a provider participant (as the API would), once; return its key id."""
    kid = participant_key_id(node_key.public)
    async with ledger.sessions.begin() as session:
        if await session.scalar(select(Participant).where(Participant.key_id == kid)) is None:
            session.add(
                Participant(
                    id=new_id_str(),
                    role="provider",
                    name=f"node {kid}",
                    public_key=node_key.public.to_base64(),
                    key_id=kid,
                    status="active",
                )
            )
    return kid


async def ledger_fill(
    ledger: Any,
    node_key: SigningKey,
    n: int,
    *,
    seed: int = 1,
    batch: int = 500,
    t0: int = 1_700_000_000,
    step: int = 60,
) -> None:
    """Append n generated records through LedgerService (append_many; usage node-signed via append_signed)."""
    start = await ledger.size()
    items = list(gen_records(n, seed=seed, t0=t0, step=step, start=start))
    node_kid = await register_node(ledger, node_key)
    for lo in range(0, len(items), batch):
        async with ledger.sessions.begin() as session:
            pending: list[tuple[str, str, dict[str, Any]]] = []
            for kind, rid, body in items[lo : lo + batch]:
                if kind == "usage":
                    if pending:
                        await ledger.append_many(session, pending)
                        pending = []
                    env = sign_envelope(record_payload_type(kind), canonical_bytes(body), [(node_kid, node_key)])
                    await ledger.append_signed(session, kind, rid, env)
                else:
                    pending.append((kind, rid, body))
            if pending:
                await ledger.append_many(session, pending)


def write_bundle(
    log: MemLog,
    out: Path,
    *,
    filters: dict[str, Any] | None = None,
    size: int | None = None,
    since_sizes: Sequence[int] = (),
    block_size: int = 8,
    export_id: str = "e1",
) -> dict[str, Any]:
    note = log.checkpoint(size)
    size = log.tree.size if size is None else size
    w = BundleWriter(
        out,
        export_id=export_id,
        created_at=1_700_000_000,
        authority="HX",
        origin=log.origin,
        filters=filters or {},
        checkpoint_note=note,
        keys=log.keys(),
        catalogue=CATALOGUE,
        since_sizes=since_sizes,
        block_size=block_size,
    )
    for i in range(size):
        w.feed(i, log.entries[i])
    return w.finish(log.key)


def reseal(bundle: Path, key: SigningKey, edit: Any = None, manifest_bytes: bytes | None = None) -> None:
    """Act as a lying exchange: after files were changed, re-list their hashes and counts in the manifest (totals
    untouched unless `edit` changes them) and re-sign it with the exchange key. `manifest_bytes`: sign these
    exact bytes instead (to test non-canonical or duplicate-key manifests)."""
    import hashlib
    import json

    from exchange.audit import layout as L

    if manifest_bytes is None:
        m = json.loads((bundle / L.MANIFEST).read_bytes())
        files = {}
        for path in sorted(bundle.rglob("*")):
            name = path.relative_to(bundle).as_posix()
            if path.is_file() and name not in (L.MANIFEST, L.MANIFEST_SIG):
                files[name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
        m["files"] = files
        rec = (bundle / L.RECORDS).read_bytes().count(b"\n") if (bundle / L.RECORDS).exists() else 0
        prf = (bundle / L.PROOFS).read_bytes().count(b"\n") if (bundle / L.PROOFS).exists() else 0
        m["counts"].update(records=rec, proofs=prf)
        if edit is not None:
            edit(m)
        manifest_bytes = canonical_bytes(m)
    (bundle / L.MANIFEST).write_bytes(manifest_bytes)
    kid = key_id_hex(json.loads(manifest_bytes)["exchange"]["origin"], key.public)
    env = sign_envelope(L.MANIFEST_PAYLOAD_TYPE, manifest_bytes, [(kid, key)])
    (bundle / L.MANIFEST_SIG).write_bytes(canonical_bytes(env))
