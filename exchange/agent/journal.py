"""The agent's local journal (SQLite, WAL, synchronous=FULL): every signed usage report is written here
before it is sent and marked sent only after the exchange accepted it, so a crash or an outage never loses
or duplicates one (a resend is byte-identical: the exchange answers it as a duplicate). Meter state and
the offer capacities the agent reduced live here too. Disk use is bounded: sent reports beyond the
retention are pruned, and when pending reports fill the budget the journal says so (`full`) and the
meters keep accruing into longer periods instead of writing new rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange.agent.meter import MeterState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (
  contract_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL, period_start INTEGER NOT NULL,
  device_seconds INTEGER NOT NULL, full_seconds INTEGER NOT NULL, util_weighted INTEGER NOT NULL,
  done INTEGER NOT NULL, contract TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
  contract_id TEXT NOT NULL, meter_id TEXT NOT NULL, seq INTEGER NOT NULL,
  period_start INTEGER NOT NULL, period_end INTEGER NOT NULL, device_minutes INTEGER NOT NULL,
  availability_bps INTEGER NOT NULL, utilization_pct INTEGER, envelope TEXT NOT NULL,
  state TEXT NOT NULL, created_at INTEGER NOT NULL, sent_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
  answer TEXT, PRIMARY KEY (contract_id, meter_id, seq));
CREATE INDEX IF NOT EXISTS reports_pending ON reports (state, created_at);
CREATE TABLE IF NOT EXISTS reduced_offers (offer_id TEXT PRIMARY KEY, offer TEXT NOT NULL);
"""


@dataclass(frozen=True)
class PendingReport:
    """A journaled report not yet accepted by the exchange."""

    contract_id: str
    meter_id: str
    seq: int
    device_minutes: int
    envelope: dict[str, Any]
    attempts: int


class Journal:
    """One node's journal file; every method is one transaction."""

    def __init__(self, path: Path, *, max_bytes: int = 64 * 1024 * 1024, keep_sent: int = 10_000) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep_sent = keep_sent
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA journal_size_limit=1048576")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the file (a checkpoint of the WAL)."""
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # meters ---------------------------------------------------------------------------------------

    def meters(self) -> dict[str, tuple[MeterState, dict[str, Any]]]:
        """Every meter with the contract it meters (last_sample_at None: time before a restart is unseen)."""
        rows = self.db.execute(
            "SELECT contract_id, next_seq, period_start, device_seconds, full_seconds, util_weighted, done, contract"
            " FROM meters"
        ).fetchall()
        return {
            r[0]: (MeterState(r[0], r[1], r[2], None, r[3], r[4], r[5], bool(r[6])), json.loads(r[7])) for r in rows
        }

    def save(self, states: list[tuple[MeterState, dict[str, Any]]], reports: list[dict[str, Any]]) -> None:
        """Meter states and newly closed, signed reports in one transaction (written before any send)."""
        now = int(time.time())
        with self.tx() as db:
            for st, contract in states:
                db.execute(
                    "INSERT INTO meters VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(contract_id) DO UPDATE SET"
                    " next_seq=excluded.next_seq, period_start=excluded.period_start,"
                    " device_seconds=excluded.device_seconds, full_seconds=excluded.full_seconds,"
                    " util_weighted=excluded.util_weighted, done=excluded.done",
                    (
                        st.contract_id,
                        st.next_seq,
                        st.period_start,
                        st.device_seconds,
                        st.full_seconds,
                        st.util_weighted,
                        int(st.done),
                        json.dumps(contract, sort_keys=True),
                    ),
                )
            for r in reports:
                db.execute(
                    "INSERT INTO reports (contract_id, meter_id, seq, period_start, period_end, device_minutes,"
                    " availability_bps, utilization_pct, envelope, state, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r["contract_id"],
                        r["meter_id"],
                        r["seq"],
                        r["period_start"],
                        r["period_end"],
                        r["device_minutes"],
                        r["availability_bps"],
                        r.get("utilization_pct"),
                        json.dumps(r["envelope"], sort_keys=True),
                        "pending",
                        now,
                    ),
                )

    # reports --------------------------------------------------------------------------------------

    def pending(self, limit: int) -> list[PendingReport]:
        """The oldest reports not yet accepted (in sequence order per meter)."""
        rows = self.db.execute(
            "SELECT contract_id, meter_id, seq, device_minutes, envelope, attempts FROM reports"
            " WHERE state='pending' ORDER BY created_at, contract_id, seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [PendingReport(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def mark_sent(self, report: PendingReport, answer: dict[str, Any]) -> None:
        """The exchange accepted the report (new or an identical earlier one)."""
        with self.tx() as db:
            db.execute(
                "UPDATE reports SET state='sent', sent_at=?, answer=?, attempts=attempts+1"
                " WHERE contract_id=? AND meter_id=? AND seq=?",
                (int(time.time()), json.dumps(answer, sort_keys=True), report.contract_id, report.meter_id, report.seq),
            )

    def mark_refused(self, report: PendingReport, answer: dict[str, Any]) -> None:
        """The exchange refused the report for good (4xx other than auth): kept, never resent, alarmed."""
        with self.tx() as db:
            db.execute(
                "UPDATE reports SET state='refused', answer=?, attempts=attempts+1"
                " WHERE contract_id=? AND meter_id=? AND seq=?",
                (json.dumps(answer, sort_keys=True), report.contract_id, report.meter_id, report.seq),
            )

    def count_attempt(self, report: PendingReport) -> None:
        """A send failed (network, 5xx): the report stays pending."""
        self.db.execute(
            "UPDATE reports SET attempts=attempts+1 WHERE contract_id=? AND meter_id=? AND seq=?",
            (report.contract_id, report.meter_id, report.seq),
        )

    def depth(self) -> int:
        """Reports waiting to be sent."""
        return int(self.db.execute("SELECT count(*) FROM reports WHERE state='pending'").fetchone()[0])

    def totals(self) -> dict[str, dict[str, int]]:
        """Per contract: reports and device-minutes by state (what the node metered and what was accepted)."""
        out: dict[str, dict[str, int]] = {}
        for cid, state, n, dm in self.db.execute(
            "SELECT contract_id, state, count(*), sum(device_minutes) FROM reports GROUP BY contract_id, state"
        ):
            row = out.setdefault(cid, {})
            row[f"{state}_reports"] = n
            row[f"{state}_device_minutes"] = int(dm or 0)
        return out

    def size_bytes(self) -> int:
        """Bytes the journal's pages take (the write-ahead log is checkpointed and truncated to 1 MiB)."""
        pages = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])  # pages freed by pruning are reused
        return (pages - free) * int(self.db.execute("PRAGMA page_size").fetchone()[0])

    @property
    def full(self) -> bool:
        """Pending reports fill the disk budget: stop writing rows, let meters accrue (no usage is lost)."""
        return self.size_bytes() >= self.max_bytes

    def prune(self) -> int:
        """Drop sent reports beyond the newest `keep_sent` (pending and refused are always kept)."""
        cur = self.db.execute(
            "DELETE FROM reports WHERE state='sent' AND rowid NOT IN"
            " (SELECT rowid FROM reports WHERE state='sent' ORDER BY sent_at DESC LIMIT ?)",
            (self.keep_sent,),
        )
        if cur.rowcount:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return cur.rowcount

    # capacity -------------------------------------------------------------------------------------

    def reduced(self) -> dict[str, dict[str, Any]]:
        """Offers the agent reduced or withdrew, as they were before (to restore them when devices return)."""
        return {k: json.loads(v) for k, v in self.db.execute("SELECT offer_id, offer FROM reduced_offers")}

    def remember_reduced(self, offer: dict[str, Any]) -> None:
        """Record an offer as it was before the first reduction (kept until it is restored)."""
        self.db.execute("INSERT OR IGNORE INTO reduced_offers VALUES (?, ?)", (offer["id"], json.dumps(offer)))

    def forget_reduced(self, offer_id: str) -> None:
        """The offer is back at its original size (or was replaced)."""
        self.db.execute("DELETE FROM reduced_offers WHERE offer_id=?", (offer_id,))
