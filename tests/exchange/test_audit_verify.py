"""The standalone verifier: its import closure, proofs from the block-split writer, and checks beyond tampering."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.audit import facts as F
from exchange.audit import layout as L
from exchange.audit.verify import verify_bundle
from federation.merkle import InMemoryTree, leaf_hash
from tests.exchange.auditkit import CATALOGUE, MemLog, fill, write_bundle

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"exchange", "federation", "identifiers", "matching", "tests"}
ALLOWED_FIRST_PARTY = {
    "exchange",
    "exchange.audit",
    "exchange.audit.verify",
    "exchange.audit.facts",
    "exchange.audit.layout",
    "exchange.audit.limits",
    "exchange.audit.source",
    "exchange.audit.strictjson",
    "exchange.audit.schemas",
    "exchange.audit.invariants",
    "federation",
    "federation.keys",
    "federation.canonical",
    "federation.dsse",
    "federation.note",
    "federation.merkle",
    "federation.errors",
    "identifiers",
    "identifiers.errors",
    "identifiers.specs",  # run by identifiers/__init__.py; standard library only (checked below)
}
ALLOWED_THIRD_PARTY = {"cryptography", "rfc8785", "jsonschema"}  # issue 10: jsonschema allowed


def _imports(module: str) -> set[str]:
    parts = module.split(".")
    path = ROOT.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = ROOT.joinpath(*parts, "__init__.py")
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _closure(start: str) -> tuple[set[str], set[str]]:
    """(first-party modules, other top-level packages) reached from `start` by static imports."""
    seen: set[str] = set()
    external: set[str] = set()
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for name in _imports(mod):
            top = name.split(".")[0]
            if top not in FIRST_PARTY:
                external.add(top)
                continue
            # `from pkg import name` may name a module or an attribute: keep it only if it is a module file
            p = ROOT.joinpath(*name.split("."))
            if p.with_suffix(".py").exists() or (p / "__init__.py").exists():
                todo.append(name)
                for i in range(1, name.count(".") + 1):  # importing a.b.c runs a and a.b
                    todo.append(name.rsplit(".", i)[0])
    return seen, external


def test_verifier_imports_only_the_standard_library_cryptography_rfc8785_and_pure_trust_modules() -> None:
    first, external = _closure("exchange.audit.verify")
    assert first <= ALLOWED_FIRST_PARTY, first - ALLOWED_FIRST_PARTY
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert external - stdlib <= ALLOWED_THIRD_PARTY, external - stdlib


def test_the_import_check_catches_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The closure check really fails when the verifier pulls in the database layer."""
    fake = tmp_path / "exchange" / "audit"
    fake.mkdir(parents=True)
    (tmp_path / "exchange" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "verify.py").write_text("import sqlalchemy\nfrom exchange.storage import engine\n")
    (tmp_path / "exchange" / "storage").mkdir()
    (tmp_path / "exchange" / "storage" / "__init__.py").write_text("")
    (tmp_path / "exchange" / "storage" / "engine.py").write_text("import aiohttp\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    first, external = _closure("exchange.audit.verify")
    assert "exchange.storage.engine" in first - ALLOWED_FIRST_PARTY
    assert {"sqlalchemy", "aiohttp"} <= external


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 70), block=st.sampled_from([1, 2, 4, 8, 16, 64]), data=st.data())
def test_block_split_proofs_equal_reference_proofs(
    tmp_path_factory: pytest.TempPathFactory, n: int, block: int, data: st.DataObject
) -> None:
    log = MemLog()
    fill(log, n)
    since = data.draw(st.lists(st.integers(1, n), max_size=3))
    out = tmp_path_factory.mktemp("b") / "bundle"
    write_bundle(log, out, block_size=block, since_sizes=since)
    ref = InMemoryTree(leaf_hash(e) for e in log.entries)
    for line in (out / L.PROOFS).read_bytes().splitlines():
        index, hashes = L.parse_proof_line(line)
        assert hashes == ref.inclusion_proof(index)
    for line in (out / L.CONSISTENCY).read_bytes().splitlines():
        c = L.parse_consistency_line(line)
        assert c.hashes == ref.consistency_proof(c.size1, c.size2)
    report = verify_bundle(out)
    assert report.ok, [str(p) for p in report.problems]


def test_unfiltered_export_must_be_contiguous(tmp_path: Path) -> None:
    log = MemLog()
    fill(log, 12)
    out = tmp_path / "b"
    write_bundle(log, out)
    recs = (out / L.RECORDS).read_bytes().splitlines(keepends=True)
    prfs = (out / L.PROOFS).read_bytes().splitlines(keepends=True)
    del recs[4], prfs[4]
    (out / L.RECORDS).write_bytes(b"".join(recs))
    (out / L.PROOFS).write_bytes(b"".join(prfs))
    report = verify_bundle(out)
    missing = [p for p in report.problems if p.code == "record_missing"]
    assert missing and missing[0].log_index == 5 and "4..4" in missing[0].message


def test_records_outside_the_filters_are_named(tmp_path: Path) -> None:
    log = MemLog()
    fill(log, 30)
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    write_bundle(log, wide)
    write_bundle(log, narrow, filters={"region": "CN-GZ"})
    # the exchange "forgets" its own filter: ship the unfiltered records under the filtered manifest
    for name in (L.RECORDS, L.PROOFS):
        (narrow / name).write_bytes((wide / name).read_bytes())
    report = verify_bundle(narrow)
    bad = [p for p in report.problems if p.code == "filter_not_honoured"]
    outside = [
        i
        for i, (k, _r, b) in enumerate(_bodies(log))
        if "CN-GZ" not in (b.get("region"), b.get("buyer_region"), b["pool_cri"].split(":")[2])
    ]
    assert sorted({p.log_index for p in bad}) == outside


def _bodies(log: MemLog) -> list[tuple[str, str, dict]]:
    out = []
    for e in log.entries:
        kind, _raw, body = F.decode_payload(json.loads(e))
        out.append((kind, "", body))
    return out


def test_retired_key_cannot_sign_later_records(tmp_path: Path) -> None:
    log = MemLog()
    fill(log, 9, t0=2_000_000_000)
    keys = log.keys()
    out = tmp_path / "b"
    from exchange.audit.writer import BundleKeyInfo, BundleWriter

    retired = [
        BundleKeyInfo(
            k.key_id, k.name, k.public_key, k.role, k.owner, None, 1_000_000_000 if k.role == "exchange" else None
        )
        for k in keys
    ]
    w = BundleWriter(
        out,
        export_id="e",
        created_at=0,
        authority="HX",
        origin=log.origin,
        filters={},
        checkpoint_note=log.checkpoint(),
        keys=retired,
        catalogue={},
        block_size=4,
    )
    for i, e in enumerate(log.entries):
        w.feed(i, e)
    w.finish(log.key)
    report = verify_bundle(out)
    assert {p.log_index for p in report.problems if p.code == "record_key_not_valid"} == {0, 2, 3, 5, 6, 8}


def test_summary_csv_is_regenerated_from_records(tmp_path: Path) -> None:
    log = MemLog()
    fill(log, 15)
    out = tmp_path / "b"
    write_bundle(log, out)
    text = (out / L.SUMMARY).read_bytes().decode()
    assert text.startswith("table,key,subkey,records,fen,scu_hours\r\n") and "flows," in text
    (out / L.SUMMARY).write_bytes(text.replace("settled,all", "settled,ALL").encode())
    assert {"summary_mismatch", "file_hash_mismatch"} <= verify_bundle(out).codes()


def test_bundle_files_follow_the_published_schemas(tmp_path: Path) -> None:
    import jsonschema

    schemas = ROOT / "specs" / "audit"

    def check(name: str, obj: object) -> None:
        schema = json.loads((schemas / name).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(obj, schema, cls=jsonschema.Draft202012Validator)

    log = MemLog()
    fill(log, 20)
    out = tmp_path / "b"
    write_bundle(log, out, since_sizes=[5, 11])
    check("manifest.schema.json", json.loads((out / L.MANIFEST).read_bytes()))
    for line in (out / L.RECORDS).read_bytes().splitlines():
        check("record-line.schema.json", json.loads(line))
    for line in (out / L.PROOFS).read_bytes().splitlines():
        check("proof-line.schema.json", json.loads(line))
    for line in (out / L.CONSISTENCY).read_bytes().splitlines():
        check("consistency-line.schema.json", json.loads(line))
    for key in (out / L.KEYS_DIR).iterdir():
        check("key.schema.json", json.loads(key.read_bytes()))
    bad = json.loads((out / L.MANIFEST).read_bytes())
    bad["totals"]["settled"]["scu_hours"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        check("manifest.schema.json", bad)


def test_settlements_inherit_facts_from_their_contract_in_the_bundle(tmp_path: Path) -> None:
    """Shapes of the settlement branch's signed bodies: a settlement names only its contract."""
    log = MemLog()
    contract = {
        "contract_id": "c-1",
        "model": "HW-910C",
        "region": "CN-GZ",
        "billing_mode": "per_minute",
        "devices": 4,
        "start_at": 1_700_000_000,
        "end_at": 1_700_007_200,
        "created_at": 1_700_000_000,
    }
    settlement = {
        "settlement_id": "s-1",
        "contract_id": "c-1",
        "billing_mode": "per_minute",
        "device_minutes": 480,
        "buyer_debit_fen": 96_000,
        "provider_credit_fen": 95_040,
        "fee_fen": 960,
        "period_end": 1_700_007_200,
        "created_at": 1_700_007_300,
    }
    orphan = {**settlement, "settlement_id": "s-2", "contract_id": "c-unknown"}
    log.append("contract", contract)
    log.append("settlement", settlement)
    log.append("settlement", orphan)
    out = tmp_path / "b"
    write_bundle(log, out, filters={"region": "CN-GZ"})
    report = verify_bundle(out)
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == 2  # the orphan states no region, so it is not in a CN-GZ export
    totals = report.totals
    assert totals is not None
    scu = F.format_scu(F.Decimal(480) / 60 * F.Decimal(CATALOGUE["HW-910C"]["scu"]))
    assert totals["by_region"] == {"CN-GZ": {"records": 1, "fen": 96_000, "scu_hours": scu}}
    assert set(totals["by_model_family"]) == {"Ascend-DaVinci"} and set(totals["by_origin"]) == {"domestic"}
    assert totals["flows"] == {"unknown": {"CN-GZ": {"records": 1, "fen": 96_000, "scu_hours": scu}}}
