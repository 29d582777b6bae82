"""The agent's journal: reports survive a reopen (crash), leave pending only when accepted, bounded disk
with a `full` alarm, pruning keeps pending and refused reports; config file errors are one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.agent.config import AgentConfigError, load_config
from exchange.agent.journal import Journal
from exchange.agent.meter import MeterState
from exchange.cli.main import main


def report(seq: int, minutes: int = 5) -> dict[str, object]:
    return {
        "contract_id": "c1",
        "meter_id": "m",
        "seq": seq,
        "period_start": 100 * seq,
        "period_end": 100 * seq + 100,
        "device_minutes": minutes,
        "availability_bps": 10_000,
        "utilization_pct": 70,
        "envelope": {"payload": "x" * 200, "payloadType": "t", "signatures": []},
    }


def test_reports_survive_a_reopen_and_are_sent_once(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    state = MeterState("c1", 3, 300, 350, device_seconds=42, full_seconds=400, util_weighted=9, done=False)
    j.save(
        [(state, {"id": "c1", "model": "NV-H20", "devices": 2, "start_at": 0, "end_at": 900})], [report(1), report(2)]
    )
    j.close()  # a crash after the commit loses nothing
    j = Journal(tmp_path / "j.db")
    [(st, contract)] = j.meters().values()
    assert (st.next_seq, st.period_start, st.device_seconds, st.last_sample_at) == (3, 300, 42, None)
    assert contract["devices"] == 2
    pending = j.pending(10)
    assert [p.seq for p in pending] == [1, 2] and j.depth() == 2
    j.mark_sent(pending[0], {"status": "accepted"})
    j.mark_refused(pending[1], {"code": "usage_refused"})
    assert j.depth() == 0
    assert j.totals() == {
        "c1": {"sent_reports": 1, "sent_device_minutes": 5, "refused_reports": 1, "refused_device_minutes": 5}
    }
    with pytest.raises(Exception, match="UNIQUE"):  # one row per (contract, meter, seq): never a second copy
        j.save([], [report(1)])
    assert j.depth() == 0


def test_disk_budget_raises_the_full_alarm_and_pruning_keeps_pending(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db", max_bytes=128 * 1024, keep_sent=2)
    seq = 0
    while not j.full:
        seq += 1
        j.save([], [report(seq)])
        assert seq < 10_000
    assert seq > 10 and j.size_bytes() >= 128 * 1024
    for p in j.pending(seq)[:-3]:
        j.mark_sent(p, {"status": "accepted"})
    assert j.prune() == seq - 3 - 2
    assert j.depth() == 3 and j.totals()["c1"]["sent_reports"] == 2
    assert not j.full  # the space pruned is free again


def test_reduced_offers_are_remembered_until_restored(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j.remember_reduced({"id": "o1", "devices": 8})
    j.remember_reduced({"id": "o1", "devices": 3})  # the first (original) size wins
    assert j.reduced() == {"o1": {"id": "o1", "devices": 8}}
    j.forget_reduced("o1")
    assert j.reduced() == {}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    good = 'exchange_url = "https://hx.example"\nsite = "CRI1:HX:CN-SH:AB:CD:X"\nkey = "k.pem"\njournal = "j.db"\n'
    cfg = load_config(write(tmp_path, good))
    assert cfg.key == tmp_path / "k.pem" and cfg.meter == "agent-CD" and cfg.period_seconds == 300
    for text, where in [
        (good + "period_seconds = 5\n", "period_seconds"),
        (good + 'source = "nope"\n', "source"),
        (good + 'source = "simulated"\n', "source_file"),
        (good + "colour = 1\n", "colour"),
        (good.replace("https://", "ftp://"), "exchange_url"),
        ("exchange_url = [\n", "config"),
    ]:
        with pytest.raises(AgentConfigError) as info:
            load_config(write(tmp_path, text))
        assert where in info.value.message, (where, info.value.message)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert main(["agent", "status", "--config", str(write(tmp_path, "exchange_url = 1\n"))]) == 2
    garbage = tmp_path / "out.txt"
    garbage.write_text("\x00\x01 not a table")
    assert main(["agent", "scan", "--source", "npu-smi", "--file", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 3, err


def test_cli_scan_reads_a_sample(capsys: pytest.CaptureFixture[str]) -> None:
    sample = Path(__file__).resolve().parents[3] / "specs" / "agent" / "samples" / "cnmon.failed.json"
    assert main(["agent", "scan", "--source", "cnmon", "--file", str(sample), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"healthy_by_model": {"CAM-MLU590": 1}' in out
