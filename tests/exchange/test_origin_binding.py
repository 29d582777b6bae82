"""Issue 11 bug 5: request signatures are bound to this exchange's configured origin (HETEX_PUBLIC_BASE_URL),
never to the client's Host header; `hetex serve` refuses to start without it outside --dev."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.client import dumps
from exchange.settings import Settings
from federation.httpsig import sign_request
from identifiers.errors import ValidationError
from tests.exchange.appfactory import make_services
from tests.exchange.registration_support import Api, make_api, order_body

OTHER = "other.example"


async def send(api: Api, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    async with api.http.session.post(api.base_url + path, data=body, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_a_request_signed_for_another_exchange_is_refused_even_with_a_spoofed_host(
    db: Any, aiohttp_client: Any, tmp_path: Path, scheme: str
) -> None:
    api = await make_api(db, aiohttp_client, tmp_path)  # bound to the URL the test server listens on
    buyer = await api.buyer()
    before = await api.counts()
    body = dumps(order_body())
    headers = sign_request("POST", f"{scheme}://{OTHER}/v1/orders", {}, body, buyer.key, buyer.keyid)
    headers.update({"Content-Type": "application/json", "Idempotency-Key": "k1", "Host": OTHER})
    status, ctype, problem = await send(api, "/v1/orders", body, headers)
    assert (status, ctype, problem["reason"]) == (401, "application/problem+json", "signature_invalid"), problem
    assert await api.counts() == before  # no order, no nonce
    # the same order signed for this exchange's URL is accepted (the refusal was about the target only)
    headers = sign_request("POST", api.base_url + "/v1/orders", {}, body, buyer.key, buyer.keyid)
    headers.update({"Content-Type": "application/json", "Idempotency-Key": "k1", "Host": OTHER})
    status, _, view = await send(api, "/v1/orders", body, headers)
    assert status == 201, view


async def test_registration_signed_for_another_exchange_is_refused(
    db: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    api = await make_api(db, aiohttp_client, tmp_path, public_base_url="https://hetex.example")
    c = api.client()
    body = dumps({"role": "buyer", "name": "b", "public_key": c.key.public.to_base64()})
    headers = sign_request("POST", f"https://{OTHER}/v1/participants", {}, body, c.key, c.keyid)
    headers.update({"Content-Type": "application/json", "Host": OTHER})
    status, ctype, problem = await send(api, "/v1/participants", body, headers)
    assert (status, ctype, problem["reason"]) == (401, "application/problem+json", "signature_invalid")
    assert (await api.counts())["participants"] == 0


async def test_without_an_origin_only_a_dev_server_takes_the_url_as_received(
    db: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    from exchange.api.app import create_app

    for dev, expected in ((False, 401), (True, 201)):
        svc = await make_services(db, tmp_path, dev=dev)
        http = await aiohttp_client(create_app(svc))
        api = Api(svc=svc, base_url=str(http.make_url("")).rstrip("/"), http=http)
        c = api.client()
        body = dumps({"role": "buyer", "name": f"dev={dev}", "public_key": c.key.public.to_base64()})
        headers = sign_request("POST", api.base_url + "/v1/participants", {}, body, c.key, c.keyid)
        headers["Content-Type"] = "application/json"
        status, _, answer = await send(api, "/v1/participants", body, headers)
        assert status == expected, (dev, answer)
        if status == 401:
            assert "HETEX_PUBLIC_BASE_URL" in answer["detail"]


def test_serve_refuses_to_start_without_a_public_base_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("HETEX_PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("HETEX_DEV", raising=False)
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["serve", "--database-url", db, "--key-dir", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HETEX_PUBLIC_BASE_URL" in err and "--dev" in err, err
    assert not (tmp_path / "x.db").exists()  # refused before touching anything
    assert main(["serve", "--database-url", db, "--public-base-url", "ftp://hetex.example"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HETEX_PUBLIC_BASE_URL" in err, err


@pytest.mark.parametrize("bad", ["hetex.example", "ftp://hetex.example", "https://", "https://h.example/?q=1"])
def test_public_base_url_must_be_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings.from_env({"HETEX_PUBLIC_BASE_URL": bad})
    assert err.value.field == "HETEX_PUBLIC_BASE_URL"
    assert Settings(public_base_url="https://hetex.example/api/").public_base_url == "https://hetex.example/api"
