"""LedgerService on SQLite and PostgreSQL: appends, checkpoints, proofs checked with federation.merkle."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from exchange.services.ledger import LedgerService
from federation.canonical import canonical_bytes
from federation.dsse import sign_json_envelope, verify_envelope, verify_json_envelope
from federation.errors import NoteError, ProofError
from federation.keys import Keyring, SigningKey
from federation.merkle import InMemoryTree, leaf_hash, verify_consistency, verify_inclusion
from federation.note import NoteVerifier, verify_checkpoint
from identifiers.errors import NotFoundError, ValidationError
from tests.exchange.ledgerkit import ORIGIN, append_n, make_ledger, record


async def _verified_checkpoint(ledger: LedgerService) -> Any:
    cp = await ledger.checkpoint()
    ring = await ledger.identity.keyring()
    return verify_checkpoint(cp.note, ring, origin=ORIGIN)


async def test_append_sign_and_store_exact_bytes(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    async with db.sessions.begin() as session:
        rec = await ledger.append(session, "contract", "c-1", {"id": "c-1", "fen": 12345, "z": [1, 2], "a": "x"})
    assert rec.index == 0
    assert rec.payload == canonical_bytes(rec.envelope)
    assert rec.leaf_hash == leaf_hash(rec.payload)
    ring = await ledger.identity.keyring()
    body = verify_json_envelope(rec.envelope, ring, payload_type="application/vnd.hetex.contract+json")
    assert body == {"id": "c-1", "fen": 12345, "z": [1, 2], "a": "x"}
    stored = await ledger.entry(0)
    assert (stored.payload, stored.leaf_hash, stored.record_id) == (rec.payload, rec.leaf_hash, "c-1")
    with pytest.raises(NotFoundError):
        await ledger.entry(1)
    with pytest.raises(ValidationError) as exc:
        async with db.sessions.begin() as session:
            await ledger.append(session, "Bad Type", "x", {})
    assert exc.value.field == "record_type"


async def test_proofs_match_reference_tree_and_checkpoints(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    ref = InMemoryTree()
    checkpoints = []
    total = 0
    for chunk in (1, 2, 4, 6, 9, 11):  # sizes 1, 3, 7, 13, 22, 33, mixing single and batched appends
        recs = await append_n(ledger, chunk, total, batch=chunk % 2 == 0)
        for r in recs:
            assert r.index == ref.append(leaf_hash(r.payload))
        total += chunk
        cp = await _verified_checkpoint(ledger)
        assert cp.size == total and cp.root == ref.root()
        checkpoints.append(cp)
    for cp in checkpoints:
        for index in sorted({0, cp.size // 2, cp.size - 1}):
            proof = await ledger.inclusion_proof(index, cp.size)
            assert proof.hashes == ref.inclusion_proof(index, cp.size)
            verify_inclusion(proof.leaf_hash, index, cp.size, proof.hashes, cp.root)
    for old in checkpoints:
        for new in checkpoints:
            if old.size <= new.size:
                proof = await ledger.consistency_proof(old.size, new.size)
                verify_consistency(old.size, new.size, proof.hashes, old.root, new.root)
    bulk = await ledger.inclusion_proofs(list(range(22)), 22)
    assert [p.hashes for p in bulk] == [ref.inclusion_proof(i, 22) for i in range(22)]
    with pytest.raises(ValidationError):
        await ledger.inclusion_proofs([0, 22], 22)
    # the default size is the latest checkpoint's; a wrong leaf does not verify
    proof = await ledger.inclusion_proof(5)
    assert proof.size == total
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(b"forged"), 5, total, proof.hashes, checkpoints[-1].root)
    report = await ledger.verify_log()
    assert report.ok, [p.describe() for p in report.problems]
    assert report.entries_checked == total and report.checkpoints_checked == len(checkpoints)


async def test_bad_proof_parameters_name_the_field(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 3)
    await ledger.checkpoint()
    for call, field in [
        (ledger.inclusion_proof(3, 3), "index"),
        (ledger.inclusion_proof(-1, 3), "index"),
        (ledger.inclusion_proof(0, 4), "size"),
        (ledger.consistency_proof(0, 3), "from"),
        (ledger.consistency_proof(3, 2), "from"),
        (ledger.consistency_proof(1, 9), "to"),
    ]:
        with pytest.raises(ValidationError) as exc:
            await call
        assert exc.value.field == field


async def test_checkpoint_is_reused_until_the_log_grows(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    empty = await ledger.checkpoint()
    assert empty.size == 0
    assert await ledger.publish_if_grown() is None
    await append_n(ledger, 2)
    grown = await ledger.publish_if_grown()
    assert grown is not None and grown.size == 2
    assert await ledger.checkpoint() == grown
    assert await ledger.publish_if_grown() is None
    # the note names its key: signature line `— <origin> base64(keyid || sig)`
    sig_line = grown.note.rstrip("\n").split("\n")[-1]
    assert sig_line.startswith(f"\u2014 {ORIGIN} ")
    assert base64.b64decode(sig_line.split(" ")[-1])[:4].hex() == grown.key_id == ledger.identity.key_id
    stranger = NoteVerifier("hetex.test/log", SigningKey.generate().public)
    with pytest.raises(NoteError):
        verify_checkpoint(grown.note, [stranger])


async def test_append_rolls_back_with_the_business_write(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    await append_n(ledger, 2)
    with pytest.raises(RuntimeError):
        async with db.sessions.begin() as session:
            await ledger.append(session, "contract", "doomed", record(99))
            raise RuntimeError("business write failed")
    recs = await append_n(ledger, 1, 2)
    assert recs[0].index == 2  # no gap left by the rolled-back append
    assert await ledger.size() == 3
    assert (await ledger.verify_log()).ok


async def test_append_signed_countersigns_node_envelope(db: Any, tmp_path: Path) -> None:
    ledger = await make_ledger(db.sessions, tmp_path / "keys")
    node = SigningKey.generate()
    body = {"contract_id": "c-1", "seq": 1, "device_minutes": 120}
    envelope = sign_json_envelope("application/vnd.hetex.usage+json", body, [("node0001", node)])
    async with db.sessions.begin() as session:
        rec = await ledger.append_signed(session, "usage", "u-1", envelope)
    assert [s["keyid"] for s in rec.envelope["signatures"]] == ["node0001", ledger.identity.key_id]
    node_ring = Keyring()
    node_ring.add("node0001", node.public)
    assert json.loads(verify_envelope(rec.envelope, node_ring)) == body
    assert json.loads(verify_envelope(rec.envelope, await ledger.identity.keyring())) == body
    with pytest.raises(ValidationError) as exc:
        async with db.sessions.begin() as session:
            await ledger.append_signed(session, "settlement", "u-2", envelope)
    assert exc.value.field == "payloadType"
    assert (await ledger.verify_log()).ok
