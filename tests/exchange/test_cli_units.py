"""Pure parts of the CLI: times and durations people type, id abbreviation and prefixes, machine output,
config profiles and their precedence."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exchange.cli.config import config_path, load_config, profile_value, save_config
from exchange.cli.contracts import build_statement, yuan
from exchange.cli.errors import CliError
from exchange.cli.main import main
from exchange.cli.output import machine_times, resolve_prefix, short_ids
from exchange.cli.times import human_duration, human_time, parse_duration, parse_time

NOW = 1_796_000_000  # 2026-11-30T...Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("8h", 28_800),
        ("90m", 5400),
        ("1h30m", 5400),
        ("3d", 259_200),
        ("PT90M", 5400),
        ("P1DT2H", 93_600),
        ("2w", 1_209_600),
        ("45s", 45),
        ("pt1h", 3600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "P", "PT", "-5m", "1.5h", "soon"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_times() -> None:
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("now+2h", now=NOW) == NOW + 7200
    assert parse_time("now - 1d", now=NOW) == NOW - 86_400
    assert parse_time("now+PT30M", now=NOW) == NOW + 1800
    assert parse_time(str(NOW)) == NOW
    assert parse_time("2026-12-05T09:00+08:00") == int(datetime(2026, 12, 5, 1, tzinfo=UTC).timestamp())
    assert parse_time("2026-12-05T01:00:00Z") == int(datetime(2026, 12, 5, 1, tzinfo=UTC).timestamp())
    local = datetime(2026, 12, 5, 9, 0).astimezone()  # no offset: the local zone
    assert parse_time("2026-12-05 09:00") == int(local.timestamp())
    for bad in ("tomorrow", "2026-13-01", "now+", "now*2"):
        with pytest.raises(ValueError):
            parse_time(bad, now=NOW)


def test_human_output() -> None:
    assert human_time(NOW + 7200, utc=True, now=NOW).endswith("UTC (in 2h)")
    assert human_time(NOW - 90, utc=True, now=NOW).endswith("(1m30s ago)")
    assert (
        human_time(NOW, utc=True, now=NOW + 30 * 86_400)
        == "2026-11-30 " + datetime.fromtimestamp(NOW, UTC).strftime("%H:%M") + " UTC"
    )
    assert human_duration(93_600) == "1d2h" and human_duration(3661, coarse=True) == "1h1m"
    assert yuan(123456) == "1,234.56" and yuan(-5) == "-0.05" and yuan(0) == "0.00"


def test_machine_times_are_rfc3339() -> None:
    doc = {"items": [{"start_at": 0, "devices": 3, "nested": {"created_at": 86_400}}], "as_of": None}
    assert machine_times(doc) == {
        "items": [{"start_at": "1970-01-01T00:00:00Z", "devices": 3, "nested": {"created_at": "1970-01-02T00:00:00Z"}}],
        "as_of": None,
    }


def test_short_ids_are_unique_prefixes() -> None:
    ids = [
        "0190f3a1-7b2c-7000-8000-000000000001",
        "0190f3a1-7b2c-7000-8000-000000000002",
        "0190f3a2-0000-7000-8000-000000000000",
        "ffffffff-0000-7000-8000-000000000000",
    ]
    short = short_ids(ids)
    assert short[ids[3]] == "ffffffff" and short[ids[2]] == "0190f3a2"
    assert short[ids[0]] == ids[0] and short[ids[1]] == ids[1]  # they differ only in the last character
    assert len(set(short.values())) == 4
    for full, prefix in short.items():
        assert resolve_prefix(prefix, ids, "contract") == full
    with pytest.raises(CliError, match="ambiguous"):
        resolve_prefix("0190f3a", ids, "contract")
    with pytest.raises(CliError, match="no contract starts with"):
        resolve_prefix("abc", ids, "contract")


def test_statement_settled_and_accruing() -> None:
    hour = 3600
    t0 = NOW - 10 * hour
    contract = {
        "id": "c1",
        "billing_mode": "per_minute",
        "model": "HW-910B3",
        "devices": 2,
        "status": "confirmed",
        "start_at": t0,
        "end_at": t0 + 20 * hour,
        "billable_end": t0 + 20 * hour,
        "buyer_price_fen": 1000,
        "provider_price_fen": 990,
    }
    old = {"id": "s1", "contract_id": "c1", "period_start": t0, "period_end": t0 + hour, "supersedes_id": None}
    fixed = {**old, "id": "s2", "supersedes_id": "s1"}
    second = {**old, "id": "s3", "period_start": t0 + hour, "period_end": t0 + 2 * hour}
    records = [
        {**old, "buyer_debit_fen": 1, "provider_credit_fen": 1, "device_minutes": 1},
        {**fixed, "buyer_debit_fen": 2000, "provider_credit_fen": 1980, "device_minutes": 120},
        {**second, "buyer_debit_fen": 2000, "provider_credit_fen": 1980, "device_minutes": 120},
    ]
    buyer = build_statement("buyer", [contract], records, NOW - 86_400, NOW, NOW)
    # settled: the corrected first hour and the second (superseded s1 ignored); accruing: 8 h x 2 dev x 1000
    assert buyer["settled_fen"] == 4000 and buyer["accruing_fen"] == 16_000
    assert buyer["by_billing_mode"] == {"per_minute": {"settled_fen": 4000, "accruing_fen": 16_000}}
    provider = build_statement("provider", [contract], records, NOW - 86_400, NOW, NOW)
    assert provider["settled_fen"] == 3960 and provider["accruing_fen"] == 15_840
    later_window = build_statement("buyer", [contract], records, t0 + 90 * 60, NOW, NOW)
    assert later_window["settled_fen"] == 2000  # only the period ending inside the window


def test_config_profiles_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("HETEX_CONFIG", "HETEX_PROFILE", "HETEX_URL", "HETEX_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "b.pem"
    key.write_text("x")
    assert config_path() == tmp_path / "xdg" / "hetex" / "config.toml"
    assert main(["config", "set", "url", "http://127.0.0.1:1234", "--profile", "buyer"]) == 0
    assert main(["config", "set", "key", str(key), "--profile", "buyer"]) == 0
    assert main(["config", "set", "role", "buyer", "--profile", "buyer"]) == 0
    assert main(["config", "set", "url", "http://other:1", "--profile", "prov"]) == 0
    assert main(["config", "set", "role", "emperor"]) == 2
    assert oct(config_path().stat().st_mode & 0o777) == "0o600"
    data = load_config()
    assert data["default_profile"] == "buyer" and data["profiles"]["prov"] == {"url": "http://other:1"}
    assert profile_value(None, "url") == "http://127.0.0.1:1234" and profile_value("prov", "url") == "http://other:1"
    monkeypatch.setenv("HETEX_PROFILE", "prov")
    assert profile_value(None, "url") == "http://other:1"
    assert main(["config", "use", "prov"]) == 0 and load_config()["default_profile"] == "prov"
    capsys.readouterr()
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["active_profile"] == "prov" and set(shown["profiles"]) == {"buyer", "prov"}
    with pytest.raises(CliError, match="no profile 'nope'"):
        profile_value("nope", "url")
    monkeypatch.setenv("HETEX_KEY", str(key))
    assert main(["contract", "list"]) == 2  # the key file is not a key: refused before any request
    assert f"{key} is not a PEM Ed25519 private key" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["b.pem", "xdg"]  # nothing written to the working directory


def test_broken_config_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HETEX_CONFIG", str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("[profiles.x\nurl=")
    with pytest.raises(CliError, match="not valid TOML"):
        load_config()
    save_config({"default_profile": 'we"ird', "profiles": {'we"ird': {"url": "http://x\\y"}}})
    assert load_config()["profiles"]['we"ird']["url"] == "http://x\\y"


def test_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.cli.client_common import client_url

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("HETEX_PROFILE", raising=False)
    monkeypatch.delenv("HETEX_URL", raising=False)
    save_config({"default_profile": "p", "profiles": {"p": {"url": "http://profile:1"}}})
    args = argparse.Namespace(url=None, profile=None)
    assert client_url(args) == "http://profile:1"
    monkeypatch.setenv("HETEX_URL", "http://env:1")
    assert client_url(args) == "http://env:1"
    assert client_url(argparse.Namespace(url="http://flag:1", profile=None)) == "http://flag:1"
