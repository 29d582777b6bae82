"""The verbs each role needs, through the signed client against a live exchange: listings in every output format,
ids by unique prefix, contract confirm/cancel, settlements, statements, market reads, rounds, peers, sites and
pools."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exchange.cli.main import main
from tests.exchange.registration_support import LiveServer

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


class Cli:
    """Runs hetex in-process with a participant's --url/--key."""

    def __init__(self, capsys: pytest.CaptureFixture[str], base: str) -> None:
        self.capsys, self.base = capsys, base

    def run(self, key: str | None, *argv: str) -> tuple[int, str, str]:
        flags = ["--url", self.base, "--key", key] if key else []
        code = main([*argv, *flags])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, key: str | None, *argv: str) -> Any:
        code, out, err = self.run(key, *argv, "-o", "json")
        assert code == 0, err
        return json.loads(out)


@SQLITE_ONLY
def test_every_role_verb(live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(capsys, live.base)
    keys: dict[str, str] = {}
    pubs: dict[str, str] = {}
    for name in ("acme", "lab", "ops"):
        assert main(["keys", "new", "--out", str(tmp_path / "k"), "--name", name, "--json"]) == 0
        made = json.loads(capsys.readouterr().out)
        keys[name], pubs[name] = made["private_key_file"], made["public_key_file"]
    acme, lab, ops = keys["acme"], keys["lab"], keys["ops"]
    cli.json(acme, "provider", "register", "--name", "Acme")
    site = cli.json(acme, "site", "add", "--region", "CN-GZ", "--name", "h1")
    cli.json(acme, "site", "add", "--region", "CN-SH", "--name", "h2")
    pool = cli.json(acme, "pool", "add", "--site", site["cri"], "--model", "HW-910B3", "--devices", "16")
    offer = cli.json(acme, "offer", "post", "--pool", pool["cri"], "--devices", "16", "--ask-fen", "1000",
                     "--start", "now", "--min-lease", "PT30M")  # fmt: skip
    assert offer["window_start"].endswith("Z")  # JSON output: RFC 3339
    sites = cli.json(acme, "site", "list")["sites"]
    assert [s["name"] for s in sites] == ["h1", "h2"] and sites[0]["pools"][0]["cri"] == pool["cri"]
    assert [s["name"] for s in cli.json(acme, "site", "list", "--region", "CN-SH")["sites"]] == ["h2"]
    assert [p["cri"] for p in cli.json(acme, "pool", "list", "--site", site["cri"])["pools"]] == [pool["cri"]]
    code, out, _ = cli.run(acme, "pool", "list", "-o", "csv")
    assert code == 0 and list(csv.reader(io.StringIO(out)))[1][0] == pool["cri"]
    assert cli.run(lab, "site", "list")[0] == 2  # not yet registered: refused, one line

    cli.json(lab, "buyer", "register", "--name", "Lab")
    assert cli.run(lab, "site", "list")[0] == 2  # a buyer has no sites: refused
    offers = cli.json(lab, "market", "offers", "--max-ask-fen", "1000")["classes"]
    assert [(c["region"], c["offered_devices"]) for c in offers] == [("CN-GZ", 16)]
    assert cli.json(lab, "market", "offers", "--max-ask-fen", "999")["classes"] == []
    quote = cli.json(lab, "market", "quote", "--devices", "4", "--duration", "90m")
    assert quote["duration_seconds"] == 5400 and quote["quotes"][0]["total_fen"] == 4 * 1000 * 3 // 2
    order = ["--devices", "4", "--models", "HW-910B3", "--duration", "2h", "--limit-fen", "1500"]
    cli.json(lab, "order", "submit", *order)
    cli.json(lab, "order", "submit", *order)
    depth = cli.json(lab, "market", "depth")
    assert depth["open_orders"] == 2 and depth["open_demand_devices"] == 8

    assert main(["admin", "add-operator", "--key", pubs["ops"], "--name", "ops", "--database-url", live.url]) == 0
    assert main(["round", "run", "--database-url", live.url, "--key-dir", str(live.tmp / "keys")]) == 0
    capsys.readouterr()
    rounds = cli.json(ops, "round", "list")["rounds"]
    assert len(rounds) == 1 and rounds[0]["contracts"] == 2
    shown = cli.json(ops, "round", "show", rounds[0]["id"][:13])
    assert shown["id"] == rounds[0]["id"] and len(shown["contract_ids"]) == 2
    assert cli.json(ops, "market", "prices")["classes"][0]["last_price"]["round_id"] == rounds[0]["id"]
    assert cli.json(ops, "peer", "list")["peers"] == []
    assert cli.run(lab, "peer", "list")[0] == 2  # operator only

    contracts = cli.json(acme, "contract", "list")["items"]
    assert len(contracts) == 2 and {c["status"] for c in contracts} == {"pending"}
    first, second = sorted(c["id"] for c in contracts)
    common = next(i for i in range(36) if first[i] != second[i])
    code, _, err = cli.run(acme, "contract", "show", first[:common])
    assert code == 2 and "ambiguous" in err and first in err and second in err
    assert cli.json(acme, "contract", "confirm", first[: common + 1])["status"] == "confirmed"
    cancelled = cli.json(lab, "contract", "cancel", second, "--reason", "changed plans")
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "changed plans"
    code, out, _ = cli.run(acme, "contract", "list", "--status", "confirmed", "-o", "yaml")
    assert code == 0 and [c["id"] for c in yaml.safe_load(out)["items"]] == [first]
    code, out, _ = cli.run(acme, "contract", "list", "-o", "id")
    assert sorted(out.split()) == [first, second]
    code, out, _ = cli.run(acme, "contract", "list")
    assert code == 0 and "contracts (2)" in out and first not in out  # abbreviated in the table
    assert cli.json(lab, "settlement", "list")["items"] == []

    statement = cli.json(lab, "statement", "--from", "now-1d", "--to", "now+1d")
    assert statement["role"] == "buyer" and statement["settled_fen"] == 0
    assert {c["contract_id"] for c in statement["contracts"]} == {first}  # the cancelled one before its start is gone
    provider = cli.json(acme, "statement", "--to", "now+1d")
    assert provider["kind"] == "earnings" and provider["contracts"][0]["contract_id"] == first
    code, _, err = cli.run(ops, "statement")
    assert code == 2 and "for buyers and providers" in err
    code, _, err = cli.run(lab, "statement", "--from", "now", "--to", "now-1h")
    assert code == 2 and "--from must be before --to" in err
