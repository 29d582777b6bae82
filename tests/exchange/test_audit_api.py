"""Audit export API through the real HTTP stack: regulator-only, owner-only, signed, bundle streamed and verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exchange.audit.verify import verify_bundle
from exchange.client import RemoteError
from federation.keys import SigningKey
from tests.exchange.auditkit import ledger_fill
from tests.exchange.registration_support import make_api


async def _download(client: Any, http: Any, path: str) -> tuple[int, bytes, dict[str, str]]:
    url = client.url(path)
    async with http.session.get(url, headers=client.sign("GET", url, b"")) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_regulator_exports_downloads_and_verifies(db: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    api = await make_api(db, aiohttp_client, tmp_path, exports_dir=tmp_path / "exports")
    await ledger_fill(api.svc.ledger, SigningKey.generate(), 24)
    reg = await api.regulator()
    job = await reg.request("POST", "/v1/audit/exports", {"from": 0, "to": 2_000_000_000, "region": "CN-GZ"})
    assert reg.last_status == 202 and job["status"] == "queued" and job["bundle"] is None
    await api.svc.audit.wait(job["id"])
    done = await reg.request("GET", f"/v1/audit/exports/{job['id']}")
    assert done["status"] == "done", done["error"]
    assert done["progress"]["records_done"] == done["progress"]["records_total"] == 24
    status, data, headers = await _download(reg, api.http, done["bundle"]["href"])
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    import hashlib

    assert hashlib.sha256(data).hexdigest() == done["bundle"]["sha256"]
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(data)
    report = verify_bundle(archive, trusted_keys=[api.svc.identity.public_key])
    assert report.ok, [str(p) for p in report.problems]
    assert report.records == done["progress"]["records_exported"] > 0


async def test_only_regulators_and_only_the_owner(db: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    api = await make_api(db, aiohttp_client, tmp_path, exports_dir=tmp_path / "exports")
    await ledger_fill(api.svc.ledger, SigningKey.generate(), 6)
    buyer = await api.buyer()
    with pytest.raises(RemoteError) as exc:
        await buyer.request("POST", "/v1/audit/exports", {"from": 0, "to": 10})
    assert exc.value.status == 403
    reg_a, reg_b = await api.regulator("A"), await api.regulator("B")
    job = await reg_a.request("POST", "/v1/audit/exports", {"from": 0, "to": 2_000_000_000})
    await api.svc.audit.wait(job["id"])
    with pytest.raises(RemoteError) as exc:
        await reg_b.request("GET", f"/v1/audit/exports/{job['id']}")
    assert exc.value.status == 403
    status, _data, _h = await _download(reg_b, api.http, f"/v1/audit/exports/{job['id']}/bundle")
    assert status == 403
    with pytest.raises(RemoteError) as exc:  # unsigned
        await reg_a.request("GET", f"/v1/audit/exports/{job['id']}", signed=False)
    assert exc.value.status == 401
    with pytest.raises(RemoteError) as exc:
        await reg_a.request("POST", "/v1/audit/exports", {"from": 10, "to": 5})
    assert exc.value.status == 422
    with pytest.raises(RemoteError) as exc:
        await reg_a.request("POST", "/v1/audit/exports", {"from": 0, "to": 5, "colour": "red"})
    assert exc.value.status == 422
