"""The regulator's fabric-wide view at the hub (specs/federation.md 9.3): members report their cross-exchange
contracts (both exchanges' signatures) and their signed checkpoint to the hub, which appends them to its own
log; the hub's ordinary audit export then covers them and `hetex audit verify` checks them offline."""

from __future__ import annotations

import asyncio
import base64
import json
import tarfile
import time
from pathlib import Path

from exchange.audit.verify import verify_bundle
from exchange.services.audit import ExportRequest
from federation.canonical import canonical_bytes
from federation.dsse import record_payload_type, sign_envelope
from federation.keys import SigningKey
from federation.note import Checkpoint, NoteSigner
from tests.federation import fedkit

H100 = "NV-H100-SXM"


def _records(bundle: Path) -> list[dict[str, object]]:
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("records.jsonl"))
        f = tar.extractfile(member)
        assert f is not None
        return [json.loads(line)["entry"] for line in f.read().splitlines()]


async def test_hub_audit_export_covers_cross_exchange_contracts_and_member_checkpoints(tmp_path: Path) -> None:
    async with fedkit.hub_fabric(tmp_path, ["A", "B", "C"], federation_forward_after_seconds=0) as (h, members):
        a, b, c = members
        with b.seed() as s:
            fedkit.seed_pool(s, "B", region="CN-NM", model=H100, devices=8, ask_fen=2000)
        with c.seed() as s:
            fedkit.seed_pool(s, "C", region="CN-GZ", model=H100, devices=8, ask_fen=1500)
        with a.seed() as s:
            order = fedkit.seed_order(s, fedkit.seed_buyer(s), devices=12, models=[H100], limit_fen=3000)
        for m in members:
            await m.svc.hub.publish()
        assert (await h.svc.hub.hub_round())["status"] == "cleared"
        deadline = time.monotonic() + 20
        while fedkit.order_row(a.db_url, order)["status"] != "filled":
            assert time.monotonic() < deadline, "order not filled through the hub"
            await asyncio.sleep(0.05)
        # A's next demand message carries its two new contracts and its signed checkpoint; sent once
        assert (await a.svc.hub.publish())["reported_contracts"] == 2
        assert (await a.svc.hub.publish())["reported_contracts"] == 0

        now = int(time.time())
        with h.seed() as s:
            regulator = fedkit._participant(s, "regulator", "regulator")
        status = await h.svc.audit.create_export(regulator, ExportRequest(period_from=now - 3600, period_to=now + 3600))
        await h.svc.audit.wait(status.id)
        bundle = await h.svc.audit.bundle_path(regulator, status.id)
        report = verify_bundle(bundle, trusted_keys=[h.fed.ctx.me.identity.public_key])
        assert report.ok, list(report.problems)
        assert report.totals is not None
        assert report.totals["records_by_kind"] == {"contract": 2, "peer-checkpoint": 1}
        key_ids = {ex.authority: ex.fed.ctx.me.key_id for ex in (h, a, b, c)}
        seen = set()
        for entry in _records(bundle):
            body = json.loads(base64.b64decode(str(entry["payload"])))
            signers = {str(sig["keyid"]) for sig in entry["signatures"]}  # type: ignore[attr-defined]
            if entry["payloadType"] == "application/vnd.hetex.contract+json":
                # both exchanges' signatures, as they signed it, and the hub's countersignature
                assert {key_ids["A"], key_ids[body["owner_authority"]], key_ids["H"]} <= signers
                seen.add((body["owner_authority"], body["devices"]))
            else:
                assert body["peer_authority"] == "A" and body["note"].startswith("a.hetex.test/log\n")
        assert seen == {("B", 4), ("C", 8)}


async def test_hub_audit_verify_refuses_a_one_sided_contract_and_a_forged_member_checkpoint(tmp_path: Path) -> None:
    """A hub that logs a contract only one exchange signed, or a member checkpoint the member never signed,
    cannot pass `hetex audit verify` (it signs what it writes, but not the members' signatures)."""
    async with fedkit.federation(tmp_path, ["H", "A", "B"], federation_hub_mode=True) as (h, a, b):
        now = int(time.time())
        body = {"kind": "cross_exchange", "contract_id": "c-1", "owner_authority": "B", "buyer_authority": "A",
                "model": H100, "region": "CN-NM", "devices": 1, "start_at": now, "end_at": now + 3600,
                "created_at": now}  # fmt: skip
        me = a.fed.ctx.me
        one_sided = sign_envelope(record_payload_type("contract"), canonical_bytes(body), [(me.key_id, me.key)])
        forged = Checkpoint(b.fed.ctx.me.identity.origin, 5, bytes(32)).sign(
            [NoteSigner(b.fed.ctx.me.identity.origin, SigningKey.generate())]
        )
        async with h.svc.sessions.begin() as s:
            await h.svc.ledger.append_signed(s, "contract", "c-1", one_sided)
            cp = {"type": "peer_checkpoint", "peer_authority": "B", "origin": b.fed.ctx.me.identity.origin, "size": 5,
                  "root": base64.b64encode(bytes(32)).decode(), "note": forged, "created_at": now}  # fmt: skip
            await h.svc.ledger.append(s, "peer-checkpoint", "B:5", cp)
        with h.seed() as s:
            regulator = fedkit._participant(s, "regulator", "regulator")
        status = await h.svc.audit.create_export(regulator, ExportRequest(period_from=now - 3600, period_to=now + 3600))
        await h.svc.audit.wait(status.id)
        report = verify_bundle(
            await h.svc.audit.bundle_path(regulator, status.id), trusted_keys=[h.fed.ctx.me.identity.public_key]
        )
        assert sorted(p.code for p in report.problems) == [
            "cross_exchange_signature_missing",
            "peer_checkpoint_invalid",
        ]
