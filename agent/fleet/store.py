"""The agent's on-disk state (SQLite, WAL): the outbox and the job table.

Outbox: every result, job event and telemetry batch is written here before it is published, under a random
``msg_id``, and deleted only when the collector acknowledges that id (an ``acks`` message, sent once the data is
in InfluxDB). The broker's PUBACK is not enough: a broker that restarts, drops a full queue or hands a message to
a subscriber that may not read it has PUBACKed a message nobody stored. A row published but not acknowledged is
published again after a wait that doubles (``next_try``); the collector drops the duplicates by id. The outbox is
bounded: telemetry is dropped oldest-first beyond ``max_telemetry`` rows (counted), results and events never.

Jobs: one row per job id, so a QoS 1 redelivery or a job sent twice runs once. A job's result event and its
``done`` state are written in the same transaction: a job either has its result queued or will run (again).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,          -- result | event | telemetry
    created REAL NOT NULL,
    msg_id TEXT,                 -- the id the collector acknowledges
    attempts INTEGER NOT NULL DEFAULT 0,  -- publications so far
    next_try REAL NOT NULL DEFAULT 0      -- publish (again) from this time on (epoch seconds)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,         -- queued | running | done | failed | cancelled
    received REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,                 -- the job process, to clean up after an agent that was killed
    finished REAL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
OUTBOX_COLUMNS = (("msg_id", "TEXT"), ("attempts", "INTEGER NOT NULL DEFAULT 0"),
                  ("next_try", "REAL NOT NULL DEFAULT 0"))


class AgentStore:
    def __init__(self, path: Path, max_telemetry: int = 2000):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_telemetry = max_telemetry
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a result acknowledged to the job must survive power loss
        self._db.executescript(SCHEMA)
        self._migrate()
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_msg_id ON outbox (msg_id)")

    def _migrate(self) -> None:
        """An outbox written by an older agent: add the delivery columns, and give its rows message ids."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        for column, kind in OUTBOX_COLUMNS:
            if column not in columns:
                self._db.execute(f"ALTER TABLE outbox ADD COLUMN {column} {kind}")
        from edgebench.agent.fleet.protocol import new_msg_id

        for row_id, payload in self._db.execute("SELECT id, payload FROM outbox WHERE msg_id IS NULL").fetchall():
            msg_id = new_msg_id()
            data = json.loads(bytes(payload))
            data["msg_id"] = msg_id
            self._db.execute("UPDATE outbox SET payload = ?, msg_id = ? WHERE id = ?",
                             (json.dumps(data, separators=(",", ":")).encode(), msg_id, row_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ outbox

    def enqueue(self, topic: str, payload: bytes, kind: str, msg_id: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO outbox (topic, payload, kind, created, msg_id) VALUES (?, ?, ?, ?, ?)",
                                   (topic, payload, kind, time.time(), msg_id))
            if kind == "telemetry":
                self._trim_telemetry()
            return int(cur.lastrowid)

    def _trim_telemetry(self) -> None:
        count = self._db.execute("SELECT COUNT(*) FROM outbox WHERE kind='telemetry'").fetchone()[0]
        excess = count - self.max_telemetry
        if excess > 0:  # under pressure telemetry goes first, oldest first; results and events never
            self._db.execute("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind='telemetry' "
                             "ORDER BY id LIMIT ?)", (excess,))
            self._bump("telemetry_dropped", excess)

    def due(self, exclude: set, limit: int, now: float, new: bool = True) -> list[tuple[int, str, bytes]]:
        """Rows to publish now, oldest first: never published, or published and not acknowledged in time.
        ``new=False``: only those published before (the collector has enough unacknowledged rows already)."""
        sql = "SELECT id, topic, payload FROM outbox WHERE next_try <= ?" + ("" if new else " AND attempts > 0")
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (now, limit + len(exclude))).fetchall()
        return [(row[0], row[1], bytes(row[2])) for row in rows if row[0] not in exclude][:limit]

    def published(self, row_id: int, next_try: float) -> int:
        """The broker took the row: wait until ``next_try`` (epoch s) for the collector's ack before publishing it
        again. Returns the row's publications so far (0 if the row is gone: acknowledged meanwhile)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1, next_try = ? WHERE id = ?",
                             (next_try, row_id))
            row = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", (row_id,)).fetchone()
            if row and row[0] > 1:
                self._bump("resent")
        return row[0] if row else 0

    def attempts(self, row_id: int) -> int:
        with self._lock:
            row = self._db.execute("SELECT attempts FROM outbox WHERE id = ?", (row_id,)).fetchone()
        return row[0] if row else 0

    def acknowledged(self, msg_ids: Iterable[str], counter: Optional[str] = None) -> int:
        """Delete the rows the collector acknowledged (or refused: ``counter`` counts them); returns how many."""
        ids = list(msg_ids)
        if not ids:
            return 0
        with self._lock:
            cur = self._db.execute(f"DELETE FROM outbox WHERE msg_id IN ({','.join('?' * len(ids))})", ids)
            if counter and cur.rowcount:
                self._bump(counter, cur.rowcount)
            return cur.rowcount

    def outstanding(self) -> int:
        """Rows published and not yet acknowledged by the collector."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox WHERE attempts > 0").fetchone()[0]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    # ------------------------------------------------------------ counters

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._bump(name, by)

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    # ------------------------------------------------------------ jobs

    def add_job(self, job_id: str, spec: str) -> bool:
        """Record a received job; False if this job id was seen before (a redelivery or a duplicate)."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO jobs (job_id, spec, state, received) "
                                   "VALUES (?, ?, 'queued', ?)", (job_id, spec, time.time()))
            return cur.rowcount == 1

    def next_job(self) -> Optional[tuple[str, str, int]]:
        """The oldest job not finished (a job left 'running' by a killed agent runs again)."""
        with self._lock:
            row = self._db.execute("SELECT job_id, spec, attempts FROM jobs WHERE state IN ('queued', 'running') "
                                   "ORDER BY received, rowid LIMIT 1").fetchone()
        return (row[0], row[1], row[2]) if row else None

    def never_started(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Of these jobs, those received and never started: job id -> spec."""
        ids = list(job_ids)
        with self._lock:
            return {row[0]: row[1] for row in self._db.execute(
                f"SELECT job_id, spec FROM jobs WHERE state = 'queued' AND attempts = 0 "
                f"AND job_id IN ({','.join('?' * len(ids))})", ids)}

    def requeue(self, job_id: str) -> None:
        """A job that ran in an interleaved group stopped for another job's cancel: it runs again."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = 'queued' WHERE job_id = ? AND state = 'running'", (job_id,))

    def start_job(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='running', attempts = attempts + 1 WHERE job_id = ?", (job_id,))

    def set_pid(self, job_id: str, pid: Optional[int]) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET pid = ? WHERE job_id = ?", (pid, job_id))

    def job_pid(self, job_id: str) -> Optional[int]:
        with self._lock:
            row = self._db.execute("SELECT pid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def job_state(self, job_id: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def finish_job(self, job_id: str, state: str, topic: str, payload: bytes, kind: str, msg_id: str) -> None:
        """The job's final state and its final event (result or error) in one transaction. On a full disk
        (sqlite3.OperationalError "database or disk is full") neither is written: the job stays unfinished and the
        caller tries again (daemon.Agent._finish)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE jobs SET state = ?, finished = ? WHERE job_id = ?",
                                 (state, time.time(), job_id))
                self._db.execute("INSERT INTO outbox (topic, payload, kind, created, msg_id) VALUES (?, ?, ?, ?, ?)",
                                 (topic, payload, kind, time.time(), msg_id))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back itself (SQLITE_FULL can)
                    with contextlib.suppress(sqlite3.Error):  # the original error is the one to raise
                        self._db.execute("ROLLBACK")
                raise

    def job_ids(self, state: str) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT job_id FROM jobs WHERE state = ? ORDER BY job_id",
                                                       (state,))]

    def cancel_queued(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE job_id=? AND state='queued'",
                                   (time.time(), job_id))
            return cur.rowcount == 1
