"""Audit export jobs on SQLite and PostgreSQL: a real log written through LedgerService, exported, verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exchange.audit import facts as F
from exchange.audit.verify import verify_bundle
from exchange.composition import Services
from exchange.services.audit import ExportNotFoundError, ExportNotYoursError, ExportRequest
from exchange.storage.participants import Participant
from federation.keys import SigningKey
from identifiers.ids import new_id_str
from tests.exchange.appfactory import make_services
from tests.exchange.auditkit import gen_records, ledger_fill

T0 = 1_700_000_000


async def add_regulator(svc: Services, name: str = "reg") -> str:
    key = SigningKey.generate()
    pid = new_id_str()
    async with svc.sessions.begin() as session:
        session.add(
            Participant(
                id=pid,
                role="regulator",
                name=name,
                public_key=key.public.to_base64(),
                key_id=key.public.key_id(name).hex(),
                status="active",
                created_at=T0,
            )
        )
    return pid


async def run_export(svc: Services, regulator: str, **body: Any) -> Any:
    body.setdefault("from", 0)
    body.setdefault("to", 2**40)
    st = await svc.audit.create_export(regulator, ExportRequest.model_validate(body))
    assert st.status == "queued"
    await svc.audit.wait(st.id)
    return await svc.audit.status(regulator, st.id)


def expected_count(n: int, keep: Any) -> int:
    return sum(1 for kind, _rid, body in gen_records(n) if keep(kind, body))


async def test_export_job_filters_progress_and_verifies(db: Any, tmp_path: Path) -> None:
    svc = await make_services(db, tmp_path, exports_dir=tmp_path / "exports")
    reg = await add_regulator(svc)
    await ledger_fill(svc.ledger, SigningKey.generate(), 90)
    lo, hi = T0 + 10 * 60, T0 + 70 * 60
    st = await run_export(svc, reg, **{"from": lo, "to": hi, "region": "CN-GZ"})
    assert st.status == "done", st.error
    want = expected_count(
        90,
        lambda k, b: lo <= b["at"] < hi and "CN-GZ" in (b["pool_cri"].split(":")[2], b.get("buyer_region")),
    )
    assert want > 0
    assert (st.records_exported, st.records_done, st.records_total, st.checkpoint_size) == (want, 90, 90, 90)
    path = await svc.audit.bundle_path(reg, st.id)
    report = verify_bundle(path, trusted_keys=[svc.identity.public_key])
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == want and report.proofs_checked == want
    assert report.filters == {"from": lo, "to": hi, "region": "CN-GZ", "operator": None, "model_family": None}
    settled = [b for k, b in ((k, b) for k, _r, b in gen_records(90)) if k == "settlement"]
    fen = sum(
        b["buyer_debit_fen"] for b in settled if lo <= b["at"] < hi and "CN-GZ" in (b["region"], b["buyer_region"])
    )
    assert report.totals is not None and report.totals["settled"]["fen"] == fen


async def test_only_the_creating_regulator_reads_an_export(db: Any, tmp_path: Path) -> None:
    svc = await make_services(db, tmp_path, exports_dir=tmp_path / "exports")
    a, b = await add_regulator(svc, "a"), await add_regulator(svc, "b")
    await ledger_fill(svc.ledger, SigningKey.generate(), 6)
    st = await run_export(svc, a)
    with pytest.raises(ExportNotYoursError):
        await svc.audit.status(b, st.id)
    with pytest.raises(ExportNotYoursError):
        await svc.audit.bundle_path(b, st.id)
    with pytest.raises(ExportNotFoundError):
        await svc.audit.status(a, new_id_str())


async def test_second_export_proves_consistency_with_the_first(db: Any, tmp_path: Path) -> None:
    svc = await make_services(db, tmp_path, exports_dir=tmp_path / "exports")
    reg = await add_regulator(svc)
    node = SigningKey.generate()
    await ledger_fill(svc.ledger, node, 25)
    first = await run_export(svc, reg)
    first_cp = _checkpoint_of(verify_bundle(await svc.audit.bundle_path(reg, first.id)))
    await ledger_fill(svc.ledger, node, 40, t0=T0 + 86_400)  # "a day later"
    await svc.ledger.identity.rotate(svc.ledger)  # and the exchange rotated its key in between
    second = await run_export(svc, reg)
    assert second.since_sizes == [25] and second.checkpoint_size == 66  # 65 records and the rotation
    path = await svc.audit.bundle_path(reg, second.id)
    report = verify_bundle(path, since_checkpoint=first_cp)
    assert report.ok, [str(p) for p in report.problems]
    assert report.consistency == {"since_size": 25, "size": 66, "status": "verified"}


def _checkpoint_of(report: Any) -> str:
    import tarfile

    with tarfile.open(report.bundle) as tar:
        member = next(m for m in tar if m.name.endswith("/checkpoint"))
        f = tar.extractfile(member)
        assert f is not None
        return f.read().decode()


async def test_manifest_totals_are_a_function_of_the_records(db: Any, tmp_path: Path) -> None:
    svc = await make_services(db, tmp_path, exports_dir=tmp_path / "exports")
    reg = await add_regulator(svc)
    await ledger_fill(svc.ledger, SigningKey.generate(), 30)
    st = await run_export(svc, reg, model_family="Ascend-DaVinci")
    report = verify_bundle(await svc.audit.bundle_path(reg, st.id))
    assert report.ok, [str(p) for p in report.problems]
    # every exported record is on the family; the catalogue in the bundle is the exchange's own
    assert report.totals is not None
    assert set(report.totals["by_model_family"]) <= {"Ascend-DaVinci"}
    want = sum(1 for k, _r, b in gen_records(30) if b.get("pool_cri", "").endswith(":HW-910C:X"))
    assert report.records == want > 0
    assert report.totals["records_by_kind"] == json.loads(json.dumps(report.totals["records_by_kind"]))
    assert F.origin_of(True) == "domestic" and set(report.totals["by_origin"]) <= {"domestic"}
