"""The signed client and the people-facing CLI verbs against a live app (loopback, SQLite file)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.client import (
    RemoteAuthenticationError,
    RemoteConflictError,
    RemoteError,
    RemotePermissionError,
    RemoteValidationError,
    remote_error,
)
from identifiers.errors import AuthenticationError, ConflictError, ValidationError
from tests.exchange.registration_support import LiveServer

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_remote_errors_keep_domain_classes() -> None:
    problem = {"code": "signature_refused", "reason": "nonce_replayed", "detail": "nonce was already used"}
    err = remote_error(401, problem)
    assert isinstance(err, RemoteAuthenticationError) and isinstance(err, AuthenticationError)
    assert (
        err.reason == "nonce_replayed" and str(err) == "nonce was already used [401 signature_refused, nonce_replayed]"
    )
    assert isinstance(remote_error(409, {"code": "x"}), ConflictError)
    assert isinstance(remote_error(422, {"code": "x", "field": "devices"}), ValidationError)
    assert remote_error(422, {"code": "x", "field": "devices"}).field == "devices"
    assert type(remote_error(418, {})) is RemoteError


@SQLITE_ONLY
def test_cli_provider_buyer_flow(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    made = run_json(capsys, "keys", "new", "--out", str(keys), "--name", "prov")
    assert stat.S_IMODE(os.stat(made["private_key_file"]).st_mode) == 0o600 and len(made["key_id"]) == 8
    prov = ["--url", live.base, "--key", made["private_key_file"]]
    me = run_json(capsys, "provider", "register", *prov, "--name", "Gui'an DC")
    assert me["role"] == "provider" and me["key_id"] == made["key_id"]
    site = run_json(capsys, "site", "add", *prov, "--region", "CN-GZ", "--name", "hall 1", "--pue", "1.2")
    pool = run_json(
        capsys, "pool", "add", *prov, "--site", site["cri"], "--model", "HW-910B3", "--devices", "16", "--nodes", "2"
    )
    assert pool["devices_per_node"] == 8 and pool["cri"].startswith(site["cri"][:-2])
    offer = run_json(capsys, "offer", "post", *prov, "--pool", pool["cri"], "--devices", "16", "--ask-fen", "1500")
    assert offer["status"] == "open" and offer["billing_modes"] == ["per_minute"]
    assert [o["id"] for o in run_json(capsys, "offer", "list", *prov)["offers"]] == [offer["id"]]
    hb = run_json(capsys, "site", "heartbeat", *prov, site["cri"])
    assert hb["cri"] == site["cri"]
    code, out, _ = run(capsys, "site", "add", *prov, "--region", "CN-SH", "--name", "hall 2")
    assert code == 0 and "CRI1:" in out  # human table

    buyer_key = run_json(capsys, "keys", "new", "--out", str(keys), "--name", "buyer")["private_key_file"]
    buy = ["--url", live.base, "--key", buyer_key]
    run_json(capsys, "buyer", "register", *buy, "--name", "lab", "--home-region", "CN-GZ")
    flags = ["--devices", "8", "--models", "HW-910B3", "--duration", "3600", "--limit-fen", "2000"]
    first = run_json(capsys, "order", "submit", *buy, *flags, "--idempotency-key", "cli-1")
    again = run_json(capsys, "order", "submit", *buy, *flags, "--idempotency-key", "cli-1")
    assert first["id"] == again["id"] and first["flags"] == []
    order_file = tmp_path / "order.json"
    order_file.write_text(
        json.dumps(
            {
                "quantity_scu": "4",
                "constraints": {"domestic_only": True},
                "duration_seconds": 7200,
                "limit_fen_per_scu_hour": 5000,
                "billing_mode": "subscription",
                "billing_terms": {"period": "monthly"},
            }
        )
    )
    from_file = run_json(capsys, "order", "submit", *buy, "--file", str(order_file))
    assert from_file["billing_mode"] == "subscription" and from_file["spec"]["quantity_scu"] == "4"
    listed = run_json(capsys, "order", "list", *buy, "--limit", "1", "--all")
    assert [o["id"] for o in listed["orders"]] == [from_file["id"], first["id"]]
    code, out, _ = run(capsys, "order", "list", *buy)
    assert code == 0 and first["id"][:8] in out
    cancelled = run_json(capsys, "order", "cancel", *buy, first["id"])
    assert cancelled["status"] == "cancelled"

    # operator adds a regulator from its .pub file; the regulator cannot write
    reg = run_json(capsys, "keys", "new", "--out", str(keys), "--name", "reg")
    added = run_json(
        capsys, "admin", "add-regulator", "--key", reg["public_key_file"], "--name", "NDRC", "--database-url", live.url
    )
    assert added["role"] == "regulator"
    code, _, err = run(
        capsys, "site", "add", "--url", live.base, "--key", reg["private_key_file"], "--region", "CN-SH", "--name", "x"
    )
    assert code == 2 and "role_forbidden" in err


@SQLITE_ONLY
def test_cli_bad_input_exits_2(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = run_json(capsys, "keys", "new", "--out", str(tmp_path), "--name", "b")["private_key_file"]
    base = ["--url", live.base, "--key", key]
    assert run(capsys, "buyer", "register", *base, "--name", "b")[0] == 0
    cases = [
        (["order", "submit", *base], "no order"),
        (
            [
                "order",
                "submit",
                *base,
                "--devices",
                "0",
                "--models",
                "NV-H100-SXM",
                "--duration",
                "60",
                "--limit-fen",
                "1",
            ],
            "quantity_devices",
        ),
        (["order", "submit", *base, "--file", str(tmp_path / "missing.json")], "cannot read"),
        (["buyer", "register", "--url", live.base, "--key", str(tmp_path / "nope.pem"), "--name", "x"], "cannot read"),
        (["buyer", "register", "--url", "ftp://x", "--key", key, "--name", "x"], "--url"),
        (["buyer", "register", *base, "--name", "again"], "key_already_registered"),
        (["keys", "new", "--out", str(tmp_path), "--name", "b"], "overwrite"),
        (["admin", "add-regulator", "--key", "bm90LWEta2V5", "--name", "r", "--database-url", live.url], "key"),
    ]
    for argv, needle in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and needle in err, (argv, err)
        assert "Traceback" not in err
    code, _, err = run(capsys, "buyer", "register", "--url", "http://127.0.0.1:9", "--key", key, "--name", "x")
    assert code == 4 and "cannot reach the exchange at http://127.0.0.1:9" in err  # unavailable: retry later


@SQLITE_ONLY
async def test_client_raises_domain_errors(live: LiveServer) -> None:
    from exchange.client import HetexClient
    from federation.keys import SigningKey

    async with HetexClient(live.base, SigningKey.generate()) as c:
        with pytest.raises(RemoteAuthenticationError) as err:
            await c.me()
        assert err.value.reason == "unknown_key"
        await c.register("buyer", "async")
        with pytest.raises(RemoteValidationError):
            await c.submit_order({"quantity_devices": 1}, "k")
        with pytest.raises(RemoteConflictError):
            await c.register("buyer", "twice")
        with pytest.raises(RemotePermissionError):
            await c.add_site("CN-SH", "nope")
        assert (await c.request("GET", "/healthz", signed=False))["status"] == "ok"


@pytest.mark.slow
def test_bench_api_runs(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "bench", "api", "--seconds", "0.5", "--concurrency", "4")
    assert data["signed_orders"]["requests"] > 0 and data["bare_aiohttp"]["requests"] > 0
    assert data["signed_orders"]["errors"] == 0
    assert data["ratio"] == round(data["signed_orders"]["per_second"] / data["bare_aiohttp"]["per_second"], 3)
